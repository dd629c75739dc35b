"""Coverage-guided fuzzing of the wire decoder with atheris (``make fuzz``; not part of ``make test``).

Input bytes are read as ZeroMQ frames (a count, then length-prefixed frames). Properties: decoding
either succeeds or raises a typed :class:`~engine.errors.InstrumentError` (anything else is a crash
that atheris reports with the input that caused it), and a decoded message encodes again and decodes
to the same message. The run starts from a corpus of real encoded requests and replies.

    python tests/fuzz_wire_atheris.py -atheris_runs=200000 build/fuzz-corpus
"""

from __future__ import annotations

import struct
import sys
from pathlib import Path

import atheris
import numpy as np

with atheris.instrument_imports():
    from engine.errors import InstrumentError
    from instruments import messages
    from instruments.wire import decode, encode, error_message

LIMIT = 1 << 20  # array bytes per message: small, so that huge shapes are refused, not allocated


def frames_of(data: bytes) -> list[bytes]:
    """Split fuzz input into frames: u8 count, then per frame a u16 length and its bytes."""
    if not data:
        return []
    count, pos, frames = data[0] % 6, 1, []
    for _ in range(count):
        if pos + 2 > len(data):
            break
        (n,) = struct.unpack_from("<H", data, pos)
        frames.append(data[pos + 2 : pos + 2 + n])
        pos += 2 + n
    return frames


def as_input(frames: list[bytes | memoryview]) -> bytes:
    """The fuzz input that :func:`frames_of` reads back as ``frames``."""
    parts = [bytes([len(frames)])]
    for f in frames:
        b = bytes(f)
        parts.append(struct.pack("<H", len(b)) + b)
    return b"".join(parts)


def seed_corpus(directory: Path) -> None:
    """Write real requests, replies and errors as starting inputs."""
    directory.mkdir(parents=True, exist_ok=True)
    pos = np.array([[1.0, 2.0], [3.0, 4.0]])
    samples = [
        messages.request("r1", "hello", {"client": "dualscope", "protocol_version": 1}),
        messages.request("r2", "measure", None, {"positions": pos}),
        messages.request("r3", "recall", {"request_id": "r2"}),
        messages.reply(messages.request("r4", "measure"), {"n": 2}, {"spectra": np.ones((2, 8), np.float32)}),
        error_message("r5", "measure", "out_of_limits", "x = 900 nm is outside [0, 100]"),
    ]
    for i, msg in enumerate(samples):
        (directory / f"seed-{i}").write_bytes(as_input(encode(msg)))


TOKENS = [
    "NaN", "Infinity", "-Infinity", "1e999", "-0", "null", "true", "[]", "{}", '"v"', '"id"', '"type"', '"cmd"',
    '"body"', '"arrays"', '"name"', '"dtype"', '"shape"', '"units"', '"<f8"', '"<f4"', '"<i8"', '"|u1"', '"|b1"',
    '"request"', '"reply"', '"error"', '"progress"', '"measure"', '"recall"', "\\ud800", "\\u0000",
]  # fmt: skip


def write_dictionary(path: Path) -> None:
    """A libFuzzer dictionary of the JSON header's keys and values, so mutations speak the format."""
    path.write_text("".join(f"t{i}={_quoted(tok)}\n" for i, tok in enumerate(TOKENS)))


def _quoted(token: str) -> str:
    return '"' + token.replace("\\", "\\\\").replace('"', '\\"') + '"'


def test_one_input(data: bytes) -> None:
    """One fuzz case: a typed error or a message that survives a round trip."""
    try:
        msg = decode(frames_of(data), LIMIT)
    except InstrumentError:
        return
    again = decode(encode(msg, LIMIT), LIMIT)
    fields = ("type", "request_id", "command", "body")
    assert [getattr(again, f) for f in fields] == [getattr(msg, f) for f in fields]
    assert again.arrays.keys() == msg.arrays.keys()
    for name, arr in msg.arrays.items():
        assert arr.dtype == again.arrays[name].dtype and arr.shape == again.arrays[name].shape
        assert arr.tobytes() == again.arrays[name].tobytes()


def main() -> None:
    """Seed the corpus directory given last on the command line (if any), then fuzz."""
    corpus = [a for a in sys.argv[1:] if not a.startswith("-")]
    argv = list(sys.argv)
    if corpus:
        seed_corpus(Path(corpus[-1]))
        dictionary = Path(corpus[-1]).parent / "wire.dict"
        write_dictionary(dictionary)
        argv.insert(1, f"-dict={dictionary}")
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
