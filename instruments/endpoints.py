"""Endpoint checks: dualscope serves loopback unless authentication is configured."""

from __future__ import annotations

import ipaddress
import re

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


_TCP = re.compile(r"^tcp://(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9_.*-]+):(\d{1,5}|\*)$")


def check_endpoint(endpoint: str) -> str:
    """Return ``endpoint`` if it is a well-formed ZeroMQ endpoint; otherwise raise ``ConfigError`` saying how one looks.

    Accepted: ``tcp://HOST:PORT`` (PORT a number or ``*`` for a free one), ``ipc://PATH``, ``inproc://NAME``.
    """
    m = _TCP.match(endpoint)
    ok = (m is not None and (m.group(2) == "*" or 0 < int(m.group(2)) < 65536)) or (
        endpoint.startswith(("ipc://", "inproc://")) and len(endpoint.split("://", 1)[1]) > 0
    )
    if not ok:
        raise ConfigError(
            f"malformed endpoint {endpoint!r}: a ZeroMQ endpoint looks like tcp://127.0.0.1:5555 "
            "(tcp://127.0.0.1:* picks a free port), ipc:///tmp/dualscope.sock or inproc://name"
        )
    return endpoint


def require_loopback(endpoint: str) -> str:
    """Return ``endpoint`` if it is well formed and loopback; otherwise raise ``ConfigError`` saying why."""
    check_endpoint(endpoint)
    if not is_loopback(endpoint):
        raise ConfigError(
            f"refusing to bind {endpoint!r}: dualscope serves only loopback (tcp://127.0.0.1:PORT, ipc://, "
            "inproc://) unless authentication is configured; use an SSH tunnel to reach it from another machine"
        )
    return endpoint
