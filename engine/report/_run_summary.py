"""The one-screen summary of a run: counts, axes, policy, time span, median timings, integrity."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np

from engine.storage import IntegrityReport, RunData

_TIMINGS = ("time_decide_s", "time_condition_s", "time_acquire_s", "time_measure_s", "time_record_s")


def run_summary(run: RunData, integrity: IntegrityReport) -> dict[str, Any]:
    """What ``dualscope inspect`` shows of a run, as JSON-ready values.

    Args:
        run: the run as read by ``engine.storage.check_run`` (``n`` rows: committed plus durable
            journal rows of a live or interrupted run).
        integrity: the run's integrity check (``engine.storage.check_run``).

    Returns:
        Name → value: counts, axes with units, images, instrument, policies, status, first/last
        spectrum (UTC, ISO 8601), time span (s), median time per stage (ms), model versions, decisions a
        model-based policy took without a model, refits (count, total s, median ms), journal rows
        pending, missing positions, software versions, every operator action (what, who, when) and
        resume (from which step, what the instrument said), where the refits ran (a Dask scheduler, and
        any fallback to the local thread) and how stale each refit was at its first use (median steps
        between its data cut and that decision), the acquisition or scalariser given from Python, drift
        tracking frames and the last shift, and the integrity ``problems`` and ``notes``.

    Examples:
        >>> summary = run_summary(*check_run(run_path))
        >>> summary["spectra"], summary["policy"], summary["status"]
        (20, 'random', 'closed')
    """
    n, attrs, spec = run.n, run.attrs, run.spectral_axis
    refits = list(attrs.get("refits", []))
    refit_s = np.array([float(r.get("fit_s", np.nan)) for r in refits], dtype=np.float64)
    ts = run.columns["timestamps"]
    med = {
        k: round(float(np.nanmedian(run.columns[k])) * 1e3, 3) if n and np.isfinite(run.columns[k]).any() else None
        for k in _TIMINGS
    }
    return {
        "spectra": n,
        "spectra_committed": run.committed,
        "channels": spec.size,
        "spectral_axis": f"{spec.name} {spec.values().min():.4g}…{spec.values().max():.4g} {spec.units}",
        "axes": ", ".join(f"{a.name} [{a.low:g}, {a.high:g}] {a.units}" for a in run.description.axes),
        "images": ", ".join(f"{k} {v.data.shape}" for k, v in run.images.items()) or "none",
        "candidates": int(run.candidate_positions.shape[0]),
        "instrument": run.description.name,
        "policy": ", ".join(run.policy_names) or "-",
        "status": attrs.get("status"),
        "stop_reason": (attrs.get("outcome") or {}).get("stop_reason", "-"),
        "first_spectrum": _utc(float(ts[0])) if n else "-",
        "last_spectrum": _utc(float(ts[-1])) if n else "-",
        "time_span_s": round(float(ts[-1] - ts[0]), 3) if n else 0.0,
        "median_decide_ms": med["time_decide_s"],
        "median_condition_ms": med["time_condition_s"],
        "median_acquire_ms": med["time_acquire_s"],
        "model_versions": (
            f"{int(run.columns['model_version'].min())}…{int(run.columns['model_version'].max())}" if n else "-"
        ),
        "median_measure_ms": med["time_measure_s"],
        "median_record_ms": med["time_record_s"],
        "decisions_without_model": decisions_without_model(run),
        "refits": len(refits),
        "refit_total_s": round(float(np.nansum(refit_s)), 3) if refits else 0.0,
        "median_refit_ms": round(float(np.nanmedian(refit_s)) * 1e3, 3) if np.isfinite(refit_s).any() else None,
        "journal_pending_rows": integrity.journal_rows,
        "missing_positions": sum(len(m["candidates"]) for m in attrs.get("missing", [])),
        "versions": ", ".join(f"{k} {v}" for k, v in attrs.get("versions", {}).items()),
        "operator_actions": [dict(a) for a in attrs.get("operator_actions", [])],
        "resumes": [dict(r) for r in attrs.get("resumes", [])],
        "median_refit_staleness": _staleness(refits),
        "training": _training(attrs.get("training_events", [])),
        "python_parts": ", ".join(f"{k} {v}" for k, v in attrs.get("python_parts", {}).items()) or "-",
        "drift_frames": len(attrs.get("drift_track", [])),
        "drift_last": (attrs.get("drift_track") or [{}])[-1].get("shift"),
        "problems": integrity.problems,
        "notes": integrity.notes,
    }


MODEL_FREE = ("random", "raster")


def decisions_without_model(run: RunData) -> int:
    """Decisions of a model-based policy taken without a model (``model_version`` -1): its random start.

    More of them than the policy's ``initial`` means the model never kept up (a background trainer
    slower than the measurements), and those decisions were random.

    Args:
        run: the run.

    Returns:
        How many steps a model-based policy decided with no model; 0 for random or raster runs.

    Examples:
        >>> decisions_without_model(read_run(run_path))  # a random campaign has no model to miss
        0
    """
    names = run.policy_names
    model_based = np.array(
        [not (n in MODEL_FREE or n.startswith("operator:")) for n in names] + [False], dtype=bool
    )  # the extra entry absorbs a code that names no policy (the integrity check reports it)
    codes = np.clip(run.columns["policy_code"].astype(np.int64), -1, len(names))
    chosen = model_based[codes] & (run.columns["model_version"] < 0)
    return int(np.unique(run.columns["step"][chosen]).size)


def _utc(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")


def _staleness(refits: list[Any]) -> float | None:
    """Median steps between a refit's data cut and the first decision that used it (refits noting their cut)."""
    gaps = [int(r["used_from_step"]) - int(r["cut"]) for r in refits if "cut" in r and "used_from_step" in r]
    return float(np.median(gaps)) if gaps else None


def _training(events: list[Any]) -> str:
    """Where the refits ran, from the run's ``training_events``: ``-`` when on this machine's thread or inline."""
    said = []
    for e in events:
        if e.get("event") == "start":
            said.append(f"dask {e.get('scheduler')} (device {e.get('device')})")
        elif e.get("event") == "fallback":
            said.append(f"fell back to the local thread at {_utc(float(e.get('time', 0.0)))}: {e.get('reason')}")
    return "; ".join(said) or "-"
