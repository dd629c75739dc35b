"""Endpoint checks: dualscope serves loopback unless authentication is configured."""

from __future__ import annotations

import ipaddress

from engine.errors import ConfigError

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def is_loopback(endpoint: str) -> bool:
    """Whether a ZeroMQ endpoint stays on this machine (``ipc://``, ``inproc://`` or a loopback TCP host)."""
    if endpoint.startswith(("ipc://", "inproc://")):
        return True
    if not endpoint.startswith("tcp://"):
        return False
    host = endpoint[len("tcp://") :].rsplit(":", 1)[0]
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def require_loopback(endpoint: str) -> str:
    """Return ``endpoint`` if it is loopback; otherwise raise ``ConfigError`` saying why."""
    if not is_loopback(endpoint):
        raise ConfigError(
            f"refusing to bind {endpoint!r}: dualscope serves only loopback (tcp://127.0.0.1:PORT, ipc://, "
            "inproc://) unless authentication is configured; use an SSH tunnel to reach it from another machine"
        )
    return endpoint
