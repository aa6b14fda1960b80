"""Unit tests of the gateway simulator."""
