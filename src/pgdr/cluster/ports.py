"""Loopback TCP ports: finding a free one and telling whether one is taken."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def find_free_port() -> int:
    """A port nothing listens on right now (the kernel's choice, so races are unlikely)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = LOOPBACK) -> bool:
    """True when something already holds ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False
