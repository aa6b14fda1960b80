"""A faithful offline simulator of IBKR's Client Portal Web API Gateway."""

__version__ = "0.1.0"
