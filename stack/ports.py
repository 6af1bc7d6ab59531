"""Free TCP ports on the loopback interface."""

from __future__ import annotations

import socket

__all__ = ["LOOPBACK", "free_port", "free_port_pair", "is_port_free"]

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free when this call returned.

    The kernel picks the port, so two calls rarely collide, but another process may
    still take it before the caller binds it.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def free_port_pair(max_attempts: int = 50) -> int:
    """Return a port ``p`` on 127.0.0.1 such that ``p`` and ``p + 1`` were both free.

    For servers that also bind the next port, such as the OpenBao dev server's
    cluster listener.

    Raises:
        OSError: no such pair was found in ``max_attempts`` tries.
    """
    for _ in range(max_attempts):
        port = free_port()
        if port < 65535 and is_port_free(port + 1):
            return port
    raise OSError(f"found no two consecutive free TCP ports on {LOOPBACK} in {max_attempts} tries")


def is_port_free(port: int) -> bool:
    """Return whether a server could bind ``port`` on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
        return True
