"""Write a dark-field dataset of N (SEM patch, scattering spectrum) pairs to Zarr, in parallel blocks.

Each block of ``block`` pairs has its own generator spawned from the seed
(``SeedSequence(seed).spawn``), so the dataset is identical whatever the number of workers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import zarr

from engine.errors import ConfigError
from simulators.darkfield import DarkFieldBatch, DarkFieldOptions, darkfield_batch, spectral_axis


def _block(args: tuple[int, DarkFieldOptions, np.random.SeedSequence]) -> DarkFieldBatch:
    n, options, seq = args
    return darkfield_batch(n, options, np.random.default_rng(seq))


def write_darkfield_dataset(
    out: Path,
    n: int,
    options: DarkFieldOptions,
    *,
    workers: int = 2,
    block: int = 250,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """Generate ``n`` pairs into a new Zarr group at ``out``; ``progress`` gets the pairs done so far.

    Arrays: ``images (n, p, p)`` float32 counts, ``spectra (n, c)`` float32 counts,
    ``cross_sections (n, c)`` nm², ``labels (n,)`` (1, 2, 3, 4 = 4+), ``n_particles (n,)``,
    ``centres_nm (n, k, 3)`` and ``radii_nm (n, k)`` NaN-padded, and ``photon_energy (c,)`` eV.
    """
    if n < 1:
        raise ConfigError("n must be >= 1")
    if out.exists():
        raise FileExistsError(f"{out} exists; choose a new output path")
    axis = spectral_axis(options)
    group = zarr.open_group(out, mode="w-")
    p, c, k = options.patch_pixels, axis.size, options.max_particles
    chunk = min(block, n)
    spec = {
        "images": ((n, p, p), "float32", ("pair", "y", "x")),
        "spectra": ((n, c), "float32", ("pair", axis.name)),
        "cross_sections": ((n, c), "float32", ("pair", axis.name)),
        "labels": ((n,), "int64", ("pair",)),
        "n_particles": ((n,), "int64", ("pair",)),
        "centres_nm": ((n, k, 3), "float64", ("pair", "particle", "xyz")),
        "radii_nm": ((n, k), "float64", ("pair", "particle")),
    }
    arrays = {
        name: group.create_array(name, shape=shape, dtype=dtype, chunks=(chunk, *shape[1:]), dimension_names=dims)
        for name, (shape, dtype, dims) in spec.items()
    }
    energy = group.create_array(axis.name, shape=(c,), dtype="float64", dimension_names=(axis.name,))
    energy[:] = axis.values()
    energy.attrs["units"] = axis.units
    arrays["cross_sections"].attrs["units"] = "nm^2"
    group.attrs["dualscope_dataset"] = {"kind": "darkfield", "n": n, "options": json.loads(options.model_dump_json())}
    sizes = [min(block, n - s) for s in range(0, n, block)]
    seqs = np.random.SeedSequence(options.seed).spawn(len(sizes))
    jobs = [(size, options, seq) for size, seq in zip(sizes, seqs, strict=True)]
    done = 0
    if workers > 1:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for batch in pool.map(_block, jobs):
                done = _store(arrays, batch, done, progress)
    else:
        for job in jobs:
            done = _store(arrays, _block(job), done, progress)
    return out


def _store(arrays: dict, batch: DarkFieldBatch, start: int, progress: Callable[[int], None] | None) -> int:
    stop = start + batch.labels.size
    for name in arrays:
        arrays[name][start:stop] = getattr(batch, name)
    if progress is not None:
        progress(stop)
    return stop
