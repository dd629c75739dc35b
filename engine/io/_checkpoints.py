"""Surrogate checkpoints on disk: ``weights.pt`` (a plain state dict) and ``surrogate.json``.

Loading uses ``torch.load(weights_only=True)``: no pickled objects are executed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from engine.surrogate import CheckpointError, Surrogate


def save_surrogate(surrogate: Surrogate, directory: Path) -> Path:
    """Write the checkpoint of ``surrogate`` into ``directory`` (created if needed).

    Args:
        surrogate: a trained surrogate.
        directory: created if needed.

    Returns:
        ``directory``, holding ``weights.pt`` and ``surrogate.json``.

    Examples:
        >>> directory = save_surrogate(model, folder / "checkpoint")
        >>> sorted(p.name for p in directory.iterdir())
        ['surrogate.json', 'weights.pt']
    """
    meta, weights = surrogate.to_state()
    directory.mkdir(parents=True, exist_ok=True)
    torch.save(weights, directory / "weights.pt")
    (directory / "surrogate.json").write_text(json.dumps(meta, indent=2))
    return directory


def load_surrogate(directory: Path, device: torch.device) -> Surrogate:
    """Load a checkpoint written by ``save_surrogate`` onto ``device``.

    Args:
        directory: written by ``save_surrogate`` (or ``dualscope train``).
        device: where the weights go, e.g. ``torch.device("cpu")``.

    Returns:
        The surrogate, ready to predict.

    Raises:
        CheckpointError: a missing, foreign or damaged checkpoint.

    Examples:
        >>> back = load_surrogate(save_surrogate(model, folder / "checkpoint"), torch.device("cpu"))
        >>> back.patch, back.channels
        (8, 64)
    """
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


FEATURES_DIR = "checkpoints"
"""Where a run keeps the checkpoints of a learned feature model (``checkpoints/features-v<version>/``)."""


def save_feature_checkpoint(
    run_dir: Path, version: int, meta: dict[str, Any], weights: dict[str, torch.Tensor], keep: int = 3
) -> Path:
    """Write the feature model's checkpoint of snapshot ``version`` into the run, atomically; keep the last ``keep``.

    Written to a temporary directory, fsynced, then renamed: a crash leaves either the whole
    checkpoint or none (a ``.partial`` leftover is ignored and removed by recovery).

    Args:
        run_dir: the run directory.
        version: the snapshot version the weights belong to.
        meta: the feature model's JSON metadata.
        weights: its state dict (copies).
        keep: checkpoints kept (older ones are removed).

    Returns:
        The checkpoint's directory inside the run.

    Examples:
        >>> save_feature_checkpoint(run_copy, 4, {"note": "example"}, {"w": torch.zeros(2)}).name
        'features-v000004'
    """
    root = run_dir / FEATURES_DIR
    final = root / f"features-v{version:06d}"
    if final.exists():
        return final
    partial = root / f"features-v{version:06d}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    torch.save(weights, partial / "weights.pt")
    (partial / "surrogate.json").write_text(json.dumps(meta, indent=2))
    for name in ("weights.pt", "surrogate.json"):
        with open(partial / name, "rb") as fh:
            os.fsync(fh.fileno())
    os.rename(partial, final)
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    for old in sorted(root.glob("features-v??????"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_feature_checkpoint(run_dir: Path, version: int) -> tuple[int, dict[str, Any], dict[str, torch.Tensor]] | None:
    """The newest complete feature checkpoint of a snapshot no later than ``version``: ``(version, meta, weights)``.

    Args:
        run_dir: the run directory.
        version: the newest snapshot version wanted.

    Returns:
        ``(version, meta, weights)`` of the newest usable checkpoint up to ``version``, or None.

    Examples:
        >>> _ = save_feature_checkpoint(run_copy, 4, {"note": "example"}, {"w": torch.zeros(2)})
        >>> version, meta, weights = load_feature_checkpoint(run_copy, 10)  # the newest up to snapshot 10
        >>> version, meta["note"], weights["w"].shape
        (4, 'example', torch.Size([2]))
    """
    found = sorted((run_dir / FEATURES_DIR).glob("features-v??????"))
    for directory in reversed(found):
        v = int(directory.name.removeprefix("features-v"))
        if v > version:
            continue
        try:
            meta = json.loads((directory / "surrogate.json").read_text())
            weights = torch.load(directory / "weights.pt", map_location="cpu", weights_only=True)
        except (OSError, ValueError, RuntimeError, EOFError):
            continue  # damaged: try an older one
        return v, meta, weights
    return None
