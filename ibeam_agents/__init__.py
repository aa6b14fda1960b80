"""The auth-watcher agent: keeps a Client Portal Gateway authenticated."""

__version__ = "0.1.0"
