"""Surrogate checkpoints on disk: ``weights.pt`` (a plain state dict) and ``surrogate.json``.

Loading uses ``torch.load(weights_only=True)``: no pickled objects are executed.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from engine.surrogate.surrogate import CheckpointError, Surrogate


def save_surrogate(surrogate: Surrogate, directory: Path) -> Path:
    """Write the checkpoint of ``surrogate`` into ``directory`` (created if needed)."""
    meta, weights = surrogate.to_state()
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(weights, directory / "weights.pt")
    (directory / "surrogate.json").write_text(json.dumps(meta, indent=2))
    return directory


def load_surrogate(directory: Path, device: torch.device) -> Surrogate:
    """Load a checkpoint written by :func:`save_surrogate` onto ``device``."""
    try:
        meta = json.loads((directory / "surrogate.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{directory}: cannot read surrogate.json ({exc})") from exc
    try:
        weights = torch.load(directory / "weights.pt", map_location=device, weights_only=True)
    except (OSError, RuntimeError, EOFError) as exc:
        raise CheckpointError(f"{directory}: cannot load weights.pt ({exc})") from exc
    try:
        return Surrogate.from_state(meta, weights, device)
    except CheckpointError as exc:
        raise CheckpointError(f"{directory}: {exc}") from exc
