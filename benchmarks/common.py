"""Benchmark records: every benchmark writes the same fields, so all results read the same way."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

RESULTS = Path(__file__).parent / "results"


def machine() -> str:
    """A short description of where the numbers were measured."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):  # not Linux: keep platform's answer
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}"
    )


@dataclass(frozen=True)
class Record:
    """One measured figure next to the baseline measured in the same run."""

    benchmark: str
    metric: str
    value: float
    unit: str
    baseline: str
    baseline_value: float
    ratio: float
    goal: str
    machine: str

    @property
    def meets_goal(self) -> bool | None:
        """Evaluate goals of the form ``ratio <= x``, ``ratio >= x``, ``value >= x``, ``value <= x``."""
        try:
            lhs, op, rhs = self.goal.split()
        except ValueError:
            return None
        x = self.ratio if lhs == "ratio" else self.value
        return x <= float(rhs) if op == "<=" else x >= float(rhs)


def results_dir(day: date | None = None) -> Path:
    """``benchmarks/results/<day>/`` (today by default), created: where a run's records and figures go."""
    folder = RESULTS / (day or date.today()).isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def write(name: str, records: list[Record], folder: Path | None = None) -> Path:
    """Write ``<folder>/<name>.json`` (``folder``: today's ``results_dir()``)."""
    path = (folder or results_dir()) / f"{name}.json"
    rows = [
        {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in asdict(r).items()} for r in records
    ]
    path.write_text(json.dumps(rows, indent=2, allow_nan=False) + "\n")
    return path
