"""Loopback ports for locally started brokers."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(host: str, port: int, timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def die_with_parent_prefix() -> list[str]:
    """A command prefix that makes the child get SIGTERM when its parent dies (Linux
    PR_SET_PDEATHSIG via util-linux `setpriv`, which then execs the real command, so the pid stays
    the broker's). For `cryptosent broker`: a kill -9 of the CLI must not leave the broker running
    on its port. Linux ties this to the starting *thread*, so library callers that may start a
    broker from a short-lived thread do not ask for it. Empty when setpriv is missing."""
    import shutil

    # util-linux puts it in /usr/bin: also found under a PATH trimmed to hide java.
    found = shutil.which("setpriv") or shutil.which("setpriv", path="/usr/bin:/bin")
    return [found, "--pdeathsig", "TERM"] if found else []
