"""Ports and hosts of the local stack: is it loopback, is a port free, does something listen."""

from __future__ import annotations

import ipaddress
import socket


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    """True when something accepts TCP connections on host:port."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_free(host: str, port: int) -> bool:
    """True when a server could listen on host:port now.

    Connecting alone misses sockets that are bound but not (yet) listening, and binding alone
    (with SO_REUSEADDR, which the services use too, so connections in TIME_WAIT after a restart
    do not count) misses listeners on some BSDs: ask both.
    """
    if port_open(host, port, timeout=0.2):
        return False
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True
