"""Free TCP ports on 127.0.0.1 for tests."""

from __future__ import annotations

import socket


def free_port() -> int:
    """Return a port that nothing listens on at the moment of the call."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
