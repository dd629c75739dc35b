"""Simulator speed: CDA EELS per probe vs particle count, and the dark-field dataset generator.

* ``EELS per probe``: one spectrum at 500 energies for a beam among N particles, with the
  system inverted once per specimen (:class:`simulators.cda.EelsModel`). Baseline, measured in the
  same run: the direct solve of the 3N×3N systems for that one probe (``numpy.linalg.solve`` over
  the 500 energies), the cost an on-demand CDA would pay per probe without the cached inverse.
* ``setup``: the one-time inversion per specimen.
* ``dark-field dataset``: 10,000 (SEM patch, spectrum) pairs with 2 worker processes, written to Zarr.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import Record, machine
from simulators.cda import Cluster, EelsModel, cluster_polarisabilities, electron_field, system_matrix, wavenumber
from simulators.darkfield import DarkFieldOptions
from simulators.darkfield_dataset import write_darkfield_dataset
from simulators.dielectric import ito

ENERGIES = np.linspace(0.15, 1.35, 500)


def monolayer_cluster(n: int) -> Cluster:
    """``n`` ITO spheres (R = 5 nm) on a square lattice of pitch 11.5 nm."""
    side = int(np.ceil(np.sqrt(n)))
    xy = np.array([(i % side, i // side) for i in range(n)], dtype=float) * 11.5
    return Cluster(np.column_stack([xy, np.zeros(n)]), np.full(n, 5.0), [ito(0.05 + 0.05 * (i % 3)) for i in range(n)])


def _median(fn, repeats: int) -> float:  # type: ignore[no-untyped-def]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def eels_scaling(sizes: tuple[int, ...] = (1, 2, 5, 10, 20, 50, 100, 150, 200)) -> list[Record]:
    m = machine()
    records = []
    for n in sizes:
        cluster = monolayer_cluster(n)
        probe = cluster.positions_nm[n // 2, :2] + np.array([7.0, 3.0])
        t0 = time.perf_counter()
        model = EelsModel(cluster, ENERGIES)
        setup = time.perf_counter() - t0
        per_probe = _median(lambda m_=model, p=probe: m_.loss(p[None]), 15)

        alpha = cluster_polarisabilities(cluster, ENERGIES)
        matrix = system_matrix(alpha, cluster.positions_nm, wavenumber(ENERGIES, 1.0))

        def direct(mat=matrix, c=cluster, p=probe) -> None:  # type: ignore[no-untyped-def]
            f = electron_field(c.positions_nm, c.radii_nm, p, ENERGIES, 100.0)
            np.linalg.solve(mat, f[..., None])

        solve = _median(direct, 3 if n >= 100 else 7)
        goal = "value <= 5" if n == 50 else ""
        records.append(
            Record(
                "simulators",
                f"EELS per probe, N={n}, 500 energies",
                per_probe * 1e3,
                "ms",
                "direct solve per probe",
                solve * 1e3,
                per_probe / solve,
                goal,
                m,
            )
        )
        records.append(
            Record(
                "simulators",
                f"EELS setup (inverse once), N={n}",
                setup * 1e3,
                "ms",
                "",
                float("nan"),
                float("nan"),
                "",
                m,
            )
        )
        del model, matrix
    return records


def darkfield_dataset(n: int = 10_000) -> Record:
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        write_darkfield_dataset(Path(tmp) / "df.zarr", n, DarkFieldOptions(), workers=2)
        elapsed = time.perf_counter() - t0
        t0 = time.perf_counter()
        write_darkfield_dataset(Path(tmp) / "one.zarr", 1000, DarkFieldOptions(), workers=1)
        serial_per_pair = (time.perf_counter() - t0) / 1000
    return Record(
        "simulators",
        f"dark-field dataset, {n} pairs, 2 workers",
        elapsed,
        "s",
        "1 worker (extrapolated from 1,000 pairs)",
        serial_per_pair * n,
        elapsed / (serial_per_pair * n),
        "value <= 60",
        machine(),
    )


def run() -> list[Record]:
    """Measure and return the simulator records."""
    return [*eels_scaling(), darkfield_dataset()]
