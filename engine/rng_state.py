"""A numpy ``Generator``'s state as portable JSON (big integers as decimal strings), and back."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def _encode(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))  # 128-bit PCG64 words do not fit a JSON double
    if isinstance(value, np.ndarray):
        return {"ndarray": [str(int(v)) for v in value.ravel()], "dtype": value.dtype.str}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"ndarray", "dtype"}:
            return np.array([int(v) for v in value["ndarray"]], dtype=np.dtype(value["dtype"]))
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    return value


def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The JSON state of ``rng`` (its bit generator's name and words)."""
    return dict(_encode(rng.bit_generator.state))


def set_rng_state(rng: np.random.Generator, state: Mapping[str, Any]) -> None:
    """Put ``rng`` back into a state taken by ``rng_state`` (same bit generator type).

    Raises:
        ValueError: the state is for another bit generator, or malformed.
    """
    decoded = _decode(dict(state))
    name = type(rng.bit_generator).__name__
    if decoded.get("bit_generator") != name:
        raise ValueError(f"RNG state is for {decoded.get('bit_generator')!r}, this generator is {name}")
    rng.bit_generator.state = decoded
