"""Who may command an instrument server: CURVE key pairs, an authorised-keys file, roles, a ZAP handler.

Every client has its own CURVE key pair and a role:

* ``observer``: ``hello``, ``describe``, ``status``, ``heartbeat`` (read only);
* ``agent``: an observer that may also ``measure``, ``acquire_image`` and ``fetch`` (what a campaign needs);
* ``operator``: everything, including ``abort``.

The server reads an authorised-keys file, one client per line: ``ROLE NAME PUBLIC_KEY`` (Z85, 40
characters; a ``#`` word starts a comment), like ``ssh``'s ``authorized_keys``. A ``ZapHandler``
answers libzmq's authentication requests (ZAP, RFC 27) on the server's context: a known key is
admitted with its name as the connection's ``User-Id``, an unknown one is refused and the refusal
logged. The server checks each command against the sender's role (``permitted``).
Key files are small TOML files; the secret one is written with mode 0600.
"""

from __future__ import annotations

import logging
import os
import threading
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
from zmq.utils import z85

from engine.errors import ConfigError

log = logging.getLogger(__name__)

ROLES = ("observer", "agent", "operator")
_OBSERVER = frozenset({"hello", "describe", "status", "heartbeat", "recall"})
_AGENT = _OBSERVER | {"measure", "acquire_image", "fetch"}
COMMANDS_BY_ROLE: dict[str, frozenset[str] | None] = {"observer": _OBSERVER, "agent": _AGENT, "operator": None}
"""Commands each role may send (``None``: every command)."""

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
ZAP_DOMAIN = "dualscope"


def permitted(role: str, command: str) -> bool:
    """Whether a client of ``role`` may send ``command``."""
    allowed = COMMANDS_BY_ROLE.get(role, frozenset())
    return allowed is None or command in allowed


def least_role_for(command: str) -> str:
    """The least privileged role that may send ``command``."""
    return next(r for r in ROLES if permitted(r, command))


@dataclass(frozen=True)
class KeyPair:
    """A CURVE key pair (Z85 text, 40 characters each) with its owner's name and role."""

    name: str
    role: str
    public: str
    secret: str = field(repr=False)

    @classmethod
    def new(cls, name: str, role: str) -> KeyPair:
        """A fresh key pair for ``name`` with ``role``."""
        _check_name_role(name, role, "new key")
        public, secret = zmq.curve_keypair()
        return cls(name, role, public.decode("ascii"), secret.decode("ascii"))

    def save(self, directory: Path) -> tuple[Path, Path]:
        """Write ``NAME.key`` (public) and ``NAME.key_secret`` (mode 0600) into ``directory``; refuses to overwrite."""
        directory.mkdir(parents=True, exist_ok=True)
        public_path, secret_path = directory / f"{self.name}.key", directory / f"{self.name}.key_secret"
        for path in (public_path, secret_path):
            if path.exists():
                raise ConfigError(f"{path} exists; remove it first or choose another name")
        head = f'name = "{self.name}"\nrole = "{self.role}"\npublic = "{self.public}"\n'
        public_path.write_text(head, encoding="utf-8")
        fd = os.open(secret_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(head + f'secret = "{self.secret}"\n')
        return public_path, secret_path

    @classmethod
    def load(cls, path: Path) -> KeyPair:
        """Read a key file written by ``save`` (``.key_secret`` for a pair; ``.key`` gives an empty secret)."""
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the key file {path}: {exc.strerror}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"key file {path} is not a dualscope key file: {exc}") from exc
        try:
            pair = cls(str(data["name"]), str(data["role"]), str(data["public"]), str(data.get("secret", "")))
        except KeyError as exc:
            raise ConfigError(f"key file {path} lacks {exc}; make keys with `dualscope keys new`") from exc
        _check_name_role(pair.name, pair.role, str(path))
        for what, key in (("public", pair.public), ("secret", pair.secret)):
            if key and len(key) != 40:
                raise ConfigError(f"key file {path}: the {what} key is not 40 Z85 characters")
        return pair

    def authorised_line(self) -> str:
        """The client's line of an authorised-keys file."""
        return f"{self.role} {self.name} {self.public}"


def _check_name_role(name: str, role: str, where: str) -> None:
    if role not in ROLES:
        raise ConfigError(f"{where}: unknown role {role!r}; choose {', '.join(ROLES)}")
    if not name or not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(f"{where}: a key name is letters, digits, '-', '_' and '.', got {name!r}")


@dataclass(frozen=True)
class AuthorisedKeys:
    """The clients a server admits: public key (Z85) → ``KeyPair`` without its secret."""

    by_public: dict[str, KeyPair]

    @classmethod
    def parse(cls, lines: Iterable[str], source: str = "authorised keys") -> AuthorisedKeys:
        """Parse ``ROLE NAME PUBLIC_KEY`` lines; errors name the line."""
        keys: dict[str, KeyPair] = {}
        for number, raw in enumerate(lines, 1):
            parts = raw.split()
            if not parts or parts[0].startswith("#"):
                continue
            if len(parts) > 3 and parts[3].startswith("#"):  # a trailing comment (Z85 itself may hold '#')
                parts = parts[:3]
            if len(parts) != 3 or len(parts[2]) != 40:
                raise ConfigError(f"{source}, line {number}: expected 'ROLE NAME PUBLIC_KEY' (40 Z85 characters)")
            role, name, public = parts
            _check_name_role(name, role, f"{source}, line {number}")
            if public in keys:
                raise ConfigError(f"{source}, line {number}: the key of {name!r} is already listed")
            if any(k.name == name for k in keys.values()):
                raise ConfigError(f"{source}, line {number}: the name {name!r} is already used by another key")
            keys[public] = KeyPair(name, role, public, "")
        return cls(keys)

    @classmethod
    def load(cls, path: Path) -> AuthorisedKeys:
        """Read an authorised-keys file."""
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read the authorised-keys file {path}: {exc.strerror}") from exc
        keys = cls.parse(text.splitlines(), str(path))
        if not keys.by_public:
            raise ConfigError(f"{path} lists no keys; add clients with `dualscope keys new NAME --authorised {path}`")
        return keys

    def __post_init__(self) -> None:
        object.__setattr__(self, "_roles", {k.name: k.role for k in self.by_public.values()})

    def role_of(self, name: str) -> str | None:
        """The role of the client called ``name`` (None if unknown); checked on every request, so a dict lookup."""
        roles: dict[str, str] = self._roles  # type: ignore[attr-defined]
        return roles.get(name)


def _own_keys(socket: zmq.Socket[Any], pair: KeyPair, what: str) -> None:
    """Give ``socket`` its own CURVE key pair (the secret half must be there)."""
    if not pair.secret:
        raise ConfigError(f"{what} of {pair.name!r} has no secret half; pass its .key_secret file")
    socket.curve_secretkey = pair.secret.encode("ascii")
    socket.curve_publickey = pair.public.encode("ascii")


@dataclass(frozen=True)
class ServerAuth:
    """What a server needs to require CURVE: its own key pair and the authorised clients."""

    server: KeyPair
    clients: AuthorisedKeys

    @classmethod
    def from_files(cls, authorised_keys: Path | None, key: Path | None, names: str) -> ServerAuth | None:
        """From an authorised-keys file and the server's own ``.key_secret`` (both or neither: ``None``).

        ``names`` says how the caller calls the two (e.g. "--authorised-keys and --server-key").
        """
        if not _both_or_neither(authorised_keys, key, names):
            return None
        assert authorised_keys is not None and key is not None
        return cls(KeyPair.load(key), AuthorisedKeys.load(authorised_keys))

    def secure(self, socket: zmq.Socket[Any]) -> None:
        """Make ``socket`` a CURVE server in the dualscope ZAP domain (before it binds)."""
        _own_keys(socket, self.server, "the server key")
        socket.curve_server = True
        socket.zap_domain = ZAP_DOMAIN.encode("ascii")


@dataclass(frozen=True)
class ClientAuth:
    """What a client needs to talk to a CURVE server: its own key pair and the server's public key."""

    client: KeyPair
    server_public: str

    @classmethod
    def from_files(cls, client_key: Path | None, server_key: Path | None, names: str) -> ClientAuth | None:
        """From this client's ``.key_secret`` and the server's public ``.key`` (both or neither: ``None``).

        ``names`` says how the caller calls the two (e.g. "--client-key and --server-key").
        """
        if not _both_or_neither(client_key, server_key, names):
            return None
        assert client_key is not None and server_key is not None
        return cls(KeyPair.load(client_key), KeyPair.load(server_key).public)

    def secure(self, socket: zmq.Socket[Any]) -> None:
        """Make ``socket`` a CURVE client of the server (before it connects)."""
        _own_keys(socket, self.client, "the key")
        socket.curve_serverkey = self.server_public.encode("ascii")


class ZapHandler:
    """Answers CURVE authentication requests on ``context`` from a thread, until ``close``.

    Only one handler can serve a context (libzmq's ZAP endpoint is per context). Admitted clients
    get their key's name as ``User-Id``; refusals are logged and kept in ``refused``.
    """

    def __init__(self, context: zmq.Context[Any], clients: AuthorisedKeys):
        self._clients = clients
        self.refused: list[str] = []
        self._socket = context.socket(zmq.REP)
        self._socket.setsockopt(zmq.LINGER, 0)
        try:
            self._socket.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            self._socket.close(linger=0)
            raise ConfigError(f"cannot start authentication on this ZeroMQ context ({exc}); one per context") from exc
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="dualscope-zap", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            if self._socket.poll(50):
                self._socket.send_multipart(self.answer(self._socket.recv_multipart()))

    def answer(self, request: list[bytes]) -> list[bytes]:
        """The ZAP reply ``[version, id, status, text, user id, metadata]`` to one request."""
        if len(request) < 6:
            return [b"1.0", b"", b"500", b"malformed ZAP request", b"", b""]
        version, rid, domain, address, _identity, mechanism, *credentials = request
        peer = address.decode("ascii", "replace") or "unknown address"
        if mechanism != b"CURVE" or domain != ZAP_DOMAIN.encode("ascii") or len(credentials) != 1:
            reason = f"refused {peer}: mechanism {mechanism.decode('ascii', 'replace')} is not CURVE"
        else:
            public = z85.encode(credentials[0]).decode("ascii")
            client = self._clients.by_public.get(public)
            if client is not None:
                return [version, rid, b"200", b"OK", client.name.encode("utf-8"), b""]
            reason = f"refused {peer}: unknown key {public}"
        log.warning("%s", reason)
        self.refused.append(reason)
        return [version, rid, b"400", reason.encode("utf-8")[:255], b"", b""]

    def close(self) -> None:
        """Stop the thread and close the socket."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._socket.close(linger=0)


def _both_or_neither(first: Path | None, second: Path | None, names: str) -> bool:
    """True when both key files are given, False when neither; a ConfigError naming ``names`` otherwise."""
    if first is None and second is None:
        return False
    if first is None or second is None:
        raise ConfigError(f"{names} go together: give both or neither")
    return True
