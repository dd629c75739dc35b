"""CURVE keys and roles: who may connect to an instrument server and what each role may send."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from engine.clock import SystemClock
from engine.errors import (
    BadRequest,
    ConfigError,
    InstrumentConnectionError,
    InstrumentTimeout,
    OutOfLimits,
    Unauthorised,
)
from instruments.auth import AuthorisedKeys, ClientAuth, KeyPair, ServerAuth, permitted
from instruments.client import ZmqInstrument
from instruments.server import InstrumentServer
from instruments.testing import positions_in
from tests.conftest import CountingDriver
from tests.engine.cli.test_cli import DUALSCOPE

ROLES = ("observer", "agent", "operator")


@pytest.fixture
def keys() -> dict[str, KeyPair]:
    return {role: KeyPair.new(f"{role}-1", role) for role in ROLES} | {"server": KeyPair.new("scope", "operator")}


@pytest.fixture
def secured(counting: CountingDriver, zmq_context: zmq.Context[Any], keys: dict[str, KeyPair]) -> Iterator[Any]:
    clients = AuthorisedKeys.parse([keys[r].authorised_line() for r in ROLES])
    server = InstrumentServer(
        counting, zmq_context, SystemClock(), endpoint="tcp://127.0.0.1:*", auth=ServerAuth(keys["server"], clients)
    )
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop, 10), daemon=True)
    thread.start()
    yield server
    stop.set()
    thread.join(timeout=5)
    server.close()


def _client(server: InstrumentServer, context: zmq.Context[Any], key: KeyPair, server_key: KeyPair) -> ZmqInstrument:
    auth = ClientAuth(key, server_key.public)
    return ZmqInstrument(server.endpoint, context, timeout_s=1.0, retries=0, auth=auth)


def test_key_files_round_trip_and_the_secret_is_private(tmp_path: Path) -> None:
    pair = KeyPair.new("alice", "agent")
    public_path, secret_path = pair.save(tmp_path / "keys")
    assert stat.S_IMODE(secret_path.stat().st_mode) == 0o600
    assert KeyPair.load(secret_path) == pair
    public_only = KeyPair.load(public_path)
    assert public_only.public == pair.public and public_only.secret == ""
    assert "secret" not in public_path.read_text()
    with pytest.raises(ConfigError, match="exists"):
        pair.save(tmp_path / "keys")
    with pytest.raises(ConfigError, match="unknown role 'admin'"):
        KeyPair.new("bob", "admin")


def test_authorised_keys_errors_name_the_line(tmp_path: Path) -> None:
    good = KeyPair.new("alice", "agent").authorised_line()
    assert AuthorisedKeys.parse(["# clients", good + "  # the lab PC", ""]).role_of("alice") == "agent"
    with pytest.raises(ConfigError, match="line 2: expected 'ROLE NAME PUBLIC_KEY'"):
        AuthorisedKeys.parse([good, "agent bob"])
    with pytest.raises(ConfigError, match="line 1: unknown role 'root'"):
        AuthorisedKeys.parse(["root bob " + "x" * 40])
    with pytest.raises(ConfigError, match="line 2: the key of 'alice2' is already listed"):
        AuthorisedKeys.parse([good, good.replace("alice", "alice2")])
    with pytest.raises(ConfigError, match="line 2: the name 'alice' is already used"):
        AuthorisedKeys.parse([good, KeyPair.new("alice", "observer").authorised_line()])
    empty = tmp_path / "authorised_keys"
    empty.write_text("# nobody yet\n")
    with pytest.raises(ConfigError, match="lists no keys"):
        AuthorisedKeys.load(empty)


def test_roles_allow_what_they_say() -> None:
    assert permitted("observer", "status") and not permitted("observer", "measure")
    assert permitted("agent", "measure") and not permitted("agent", "abort")
    assert permitted("operator", "abort") and permitted("operator", "measure")


def test_each_role_may_send_its_commands_and_no_more(
    secured: InstrumentServer, zmq_context: zmq.Context[Any], keys: dict[str, KeyPair]
) -> None:
    server_key = keys["server"]
    with _client(secured, zmq_context, keys["agent"], server_key) as agent:
        desc = agent.hello()
        m = agent.measure(positions_in(desc, 2))
        assert m.spectra.shape == (2, desc.spectral_axis.size) and np.isfinite(m.spectra).all()
        with pytest.raises(Unauthorised, match="'agent-1' \\(role agent\\) may not send 'abort'; it needs the role op"):
            agent.abort()
    with _client(secured, zmq_context, keys["observer"], server_key) as observer:
        assert observer.status()["busy"] is False
        with pytest.raises(Unauthorised, match="needs the role agent"):
            observer.measure(positions_in(desc, 1))
        with pytest.raises(Unauthorised, match="may not send 'set_limits'; it needs the role operator"):
            observer.set_limits({})
    with (
        _client(secured, zmq_context, keys["agent"], server_key) as agent,
        pytest.raises(Unauthorised, match="'agent-1' \\(role agent\\) may not send 'set_limits'"),
    ):
        agent.set_limits({"max_step": 1.0})
    with _client(secured, zmq_context, keys["operator"], server_key) as operator:
        operator.abort()
        assert operator.measure(positions_in(desc, 1)).spectra.shape[0] == 1
        assert operator.set_limits({"max_step": 1.0})["safety"] == {"max_step": 1.0}
        with pytest.raises(OutOfLimits, match="exceeds the largest allowed step 1"):
            operator.measure(positions_in(desc, 1, seed=5))
        with pytest.raises(BadRequest, match="max_step"):
            operator.set_limits({"max_step": -2.0})
        operator.set_limits({})
    assert len(secured.unauthorised) == 4 and "observer-1" in secured.unauthorised[1]


def test_unknown_keys_and_plain_clients_are_refused_and_logged(
    secured: InstrumentServer, zmq_context: zmq.Context[Any], keys: dict[str, KeyPair], caplog: Any
) -> None:
    stranger = KeyPair.new("mallory", "operator")
    with (
        _client(secured, zmq_context, stranger, keys["server"]) as client,
        caplog.at_level("WARNING"),
        pytest.raises(InstrumentTimeout, match="is the key 'mallory' in its authorised-keys file"),
    ):
        client.hello()
    assert secured.refused and stranger.public in secured.refused[0]
    assert any("unknown key" in r.message for r in caplog.records)
    with (
        ZmqInstrument(secured.endpoint, zmq_context, timeout_s=0.5, retries=0) as plain,  # no CURVE at all
        pytest.raises(InstrumentTimeout),
    ):
        plain.hello()
    # a client that expects another server's key does not get in either
    with (
        _client(secured, zmq_context, keys["agent"], KeyPair.new("other", "operator")) as wrong_server,
        pytest.raises(InstrumentTimeout),
    ):
        wrong_server.hello()


def test_non_loopback_needs_authentication(counting: CountingDriver, zmq_context: zmq.Context[Any]) -> None:
    with pytest.raises(ConfigError, match="unless authentication is configured"):
        InstrumentServer(counting, zmq_context, SystemClock(), endpoint="tcp://0.0.0.0:5999")
    no_secret = ServerAuth(KeyPair("scope", "operator", KeyPair.new("x", "agent").public, ""), AuthorisedKeys({}))
    with pytest.raises(InstrumentConnectionError, match="no secret half"):
        InstrumentServer(counting, zmq_context, SystemClock(), endpoint="tcp://127.0.0.1:*", auth=no_secret)


def test_keys_new_then_serve_with_keys_from_the_command_line(tmp_path: Path) -> None:
    authorised = tmp_path / "authorised_keys"
    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*DUALSCOPE, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)

    assert cli("keys", "new", "scope", "--role", "operator", "--dir", "keys").returncode == 0
    made = cli("keys", "new", "alice", "--role", "agent", "--dir", "keys", "--authorised", str(authorised))
    assert made.returncode == 0 and "agent alice added" in made.stdout
    again = cli("keys", "new", "alice", "--dir", "other", "--authorised", str(authorised))
    assert again.returncode == 2 and "already lists a key called 'alice'" in again.stderr
    assert AuthorisedKeys.load(authorised).role_of("alice") == "agent"
    half = cli("serve", "synthetic", "--authorised-keys", str(authorised))
    assert half.returncode == 2 and "go together" in half.stderr
    serve_args = ["serve", "synthetic", "--authorised-keys", str(authorised), "--server-key", "keys/scope.key_secret"]
    proc = subprocess.Popen([*DUALSCOPE, *serve_args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)  # fmt: skip
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        assert proc.stdout is not None
        endpoint = proc.stdout.readline().split()[1]
        auth = ClientAuth.from_files(tmp_path / "keys/alice.key_secret", tmp_path / "keys/scope.key", "keys")
        with ZmqInstrument(endpoint, ctx, timeout_s=10, auth=auth) as client:
            desc = client.hello()
            assert client.measure(positions_in(desc, 1)).spectra.shape == (1, desc.spectral_axis.size)
            with pytest.raises(Unauthorised, match="needs the role operator"):
                client.abort()
    finally:
        ctx.destroy(linger=0)
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 0 and "'alice' (role agent) may not send 'abort'" in stderr
    with pytest.raises(ConfigError, match="give both or neither"):
        ClientAuth.from_files(tmp_path / "keys/alice.key_secret", None, "keys")
