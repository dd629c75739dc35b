"""The dualscope wire format: multipart ZeroMQ messages, pure encode/decode.

A message is ``[header, buffer_0, buffer_1, ...]``:

* ``header``: UTF-8 JSON object ``{"v": 1, "id": str, "type": "request"|"reply"|"error"|"progress",
  "cmd": str, "body": {...}, "arrays": [{"name", "dtype", "shape", "units"}, ...]}``
* one raw, C-ordered buffer per entry of ``arrays``, little-endian numeric dtypes only.

No pickle, no object dtypes. Every size is checked before anything is allocated.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from engine.errors import BadRequest, ProtocolVersionMismatch
from engine.types import JSON

PROTOCOL_VERSION = 1
MAX_HEADER_BYTES = 64 * 1024
MAX_ARRAYS = 16
MAX_DIMS = 8
DEFAULT_MAX_ARRAY_BYTES = 256 * 1024 * 1024
ALLOWED_DTYPES = frozenset({"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f4", "<f8"})

MessageType = Literal["request", "reply", "error", "progress"]
_TYPES = ("request", "reply", "error", "progress")


class MalformedMessage(BadRequest):
    """A message that cannot be decoded; ``request_id`` is set when the header was readable."""


@dataclass(frozen=True)
class Message:
    """One decoded message.

    Attributes:
        type: ``request``, ``reply``, ``error`` or ``progress`` (a request is still running).
        request_id: the idempotency key shared by a request, its retries and its reply.
        command: e.g. ``measure``.
        body: JSON arguments or results.
        arrays: named arrays (positions ``(n, d)``, spectra ``(n, c)``, images ``(h, w)``).
        units: units per array name, where known.
    """

    type: MessageType
    request_id: str
    command: str
    body: Mapping[str, JSON] = field(default_factory=dict)
    arrays: Mapping[str, NDArray[Any]] = field(default_factory=dict)
    units: Mapping[str, str] = field(default_factory=dict)
    version: int = PROTOCOL_VERSION


def encode(message: Message, max_array_bytes: int = DEFAULT_MAX_ARRAY_BYTES) -> list[bytes | memoryview]:
    """Encode ``message`` into ZeroMQ frames (zero-copy for contiguous arrays).

    Raises:
        ValueError: an array has a dtype outside ``ALLOWED_DTYPES``, too many
            dimensions, or the message exceeds the size limits.
    """
    if len(message.arrays) > MAX_ARRAYS:
        raise ValueError(f"{len(message.arrays)} arrays in one message; the limit is {MAX_ARRAYS}")
    specs, buffers, total = [], [], 0
    for name, arr in message.arrays.items():
        a = np.require(arr, requirements="C")  # unlike ascontiguousarray, keeps 0-d arrays 0-d
        if a.dtype.byteorder == ">" or (a.dtype.byteorder == "=" and not np.little_endian):
            a = a.astype(a.dtype.newbyteorder("<"))
        dtype = a.dtype.str
        if dtype not in ALLOWED_DTYPES:
            raise ValueError(f"array {name!r}: dtype {a.dtype} cannot go on the wire")
        if a.ndim > MAX_DIMS:
            raise ValueError(f"array {name!r}: {a.ndim} dimensions; the limit is {MAX_DIMS}")
        total += a.nbytes
        specs.append({"name": name, "dtype": dtype, "shape": list(a.shape), "units": message.units.get(name, "")})
        buffers.append(memoryview(a.data).cast("B") if a.nbytes else b"")
    if total > max_array_bytes:
        raise ValueError(f"message arrays total {total} bytes; the limit is {max_array_bytes}")
    header = {
        "v": message.version,
        "id": message.request_id,
        "type": message.type,
        "cmd": message.command,
        "body": dict(message.body),
        "arrays": specs,
    }
    head = json.dumps(header, separators=(",", ":"), allow_nan=False).encode()
    if len(head) > MAX_HEADER_BYTES:
        raise ValueError(f"header is {len(head)} bytes; the limit is {MAX_HEADER_BYTES}")
    return [head, *buffers]


def _no_constant(name: str) -> Any:
    """NaN and Infinity are not JSON (and the encoder refuses them): a header that has one is malformed."""
    raise ValueError(f"{name} is not valid JSON")


_HEADER_DECODER = json.JSONDecoder(parse_constant=_no_constant)
"""One decoder for every header (``json.loads`` with an option builds a new one per call)."""


def _parse_header(frame: bytes) -> dict[str, Any]:
    if len(frame) > MAX_HEADER_BYTES:
        raise MalformedMessage(f"header is {len(frame)} bytes; the limit is {MAX_HEADER_BYTES}")
    try:
        header = _HEADER_DECODER.decode(bytes(frame).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError) as exc:
        raise MalformedMessage(f"header is not UTF-8 JSON: {exc}") from exc
    if not isinstance(header, dict):
        raise MalformedMessage("header must be a JSON object")
    return header


def decode(frames: Sequence[bytes | memoryview], max_array_bytes: int = DEFAULT_MAX_ARRAY_BYTES) -> Message:
    """Decode ZeroMQ frames into a ``Message``, checking every field and size.

    Raises:
        MalformedMessage: anything about the frames is wrong (the error says what).
        ProtocolVersionMismatch: the header's ``v`` is not ``PROTOCOL_VERSION``.
    """
    if not frames:
        raise MalformedMessage("empty message")
    header = _parse_header(bytes(frames[0]))
    raw_id = header.get("id")
    rid = raw_id[:128] if isinstance(raw_id, str) else ""  # what errors echo must itself be a valid id
    version = header.get("v")
    if version != PROTOCOL_VERSION:
        raise ProtocolVersionMismatch(
            f"peer speaks protocol version {version!r}; this side speaks {PROTOCOL_VERSION}", rid
        )
    kind, cmd, body, specs = header.get("type"), header.get("cmd"), header.get("body", {}), header.get("arrays", [])
    if kind not in _TYPES:
        raise MalformedMessage(f"message type {kind!r} is not one of {', '.join(_TYPES)}", rid)
    if not rid or len(str(raw_id)) > 128:
        raise MalformedMessage("request id must be a non-empty string of at most 128 characters", rid)
    if not isinstance(cmd, str) or not cmd:
        raise MalformedMessage("'cmd' must be a non-empty string", rid)
    if not isinstance(body, dict):
        raise MalformedMessage("'body' must be a JSON object", rid)
    if not isinstance(specs, list) or len(specs) > MAX_ARRAYS:
        raise MalformedMessage(f"'arrays' must be a list of at most {MAX_ARRAYS} entries", rid)
    if len(specs) != len(frames) - 1:
        raise MalformedMessage(f"header lists {len(specs)} arrays but {len(frames) - 1} buffers follow", rid)
    arrays: dict[str, NDArray[Any]] = {}
    units: dict[str, str] = {}
    total = 0
    for spec, buf in zip(specs, frames[1:], strict=True):
        name, a_units = _check_spec(spec, rid)
        dtype, shape = np.dtype(spec["dtype"]), tuple(spec["shape"])
        count = math.prod(shape)
        nbytes = count * dtype.itemsize
        total += nbytes
        if total > max_array_bytes:
            raise MalformedMessage(f"arrays exceed the limit of {max_array_bytes} bytes", rid)
        view = memoryview(buf)
        if view.nbytes != nbytes:
            raise MalformedMessage(
                f"array {name!r}: buffer has {view.nbytes} bytes, dtype {dtype} and shape {shape} need {nbytes}", rid
            )
        if name in arrays:
            raise MalformedMessage(f"array name {name!r} appears twice", rid)
        arrays[name] = np.frombuffer(view, dtype=dtype, count=count).reshape(shape)
        if a_units:
            units[name] = a_units
    return Message(kind, rid, cmd, body, arrays, units, version)


def _check_spec(spec: Any, rid: str) -> tuple[str, str]:
    if not isinstance(spec, dict):
        raise MalformedMessage("each array spec must be a JSON object", rid)
    name, dtype, shape, units = spec.get("name"), spec.get("dtype"), spec.get("shape"), spec.get("units", "")
    if not isinstance(name, str) or not name:
        raise MalformedMessage("array spec needs a non-empty 'name'", rid)
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:  # a list is unhashable: check the type first
        raise MalformedMessage(f"array {name!r}: dtype {dtype!r} is not allowed on the wire", rid)
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_DIMS
        or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape)
    ):
        raise MalformedMessage(f"array {name!r}: shape must be a list of at most {MAX_DIMS} non-negative ints", rid)
    if not isinstance(units, str):
        raise MalformedMessage(f"array {name!r}: units must be a string", rid)
    return name, units


def error_message(request_id: str, command: str, code: str, text: str) -> Message:
    """An ``error`` reply carrying a wire error ``code`` (see ``engine.errors.INSTRUMENT_ERRORS``)."""
    return Message("error", request_id or "-", command or "-", {"code": code, "message": text})
