"""Load training data for the surrogates from Zarr: simulated datasets and dualscope runs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import zarr

from engine.errors import ConfigError, RunStorageError
from engine.storage import array_node, read_run
from engine.surrogate import PairedData, extract_patches


def load_paired(path: Path, patch: int = 32) -> tuple[PairedData, np.ndarray, str]:
    """Patches, spectra and labels from ``path``; also the spectral axis values and units.

    Accepts a dataset written by ``dualscope simulate`` (arrays ``images``, ``spectra``, ``labels``)
    or a dualscope run (patches of side ``patch`` cut from the structural image around every
    measured position; unmeasured candidates become image-only rows).

    Args:
        path: a dataset or a run directory.
        patch: patch side in pixels, cut from a run's image (a dataset's patches are binned down to it:
            a divisor of their side).

    Returns:
        The pairs, the spectral axis values ``(c,)`` and their units.

    Raises:
        RunStorageError: not a dataset or run. ConfigError: a patch size the dataset cannot give.

    Examples:
        >>> data, energy, units = load_paired(run_path, patch=8)
        >>> int(data.has_spectrum.sum()), data.patches.shape[1:], units
        (20, (8, 8), 'eV')
    """
    if not (path / "zarr.json").is_file():
        raise RunStorageError(f"{path}: not a Zarr dataset or run (no zarr.json)")
    group = zarr.open_group(path, mode="r")
    if "dualscope_dataset" in group.attrs:
        axis_name = next(
            k
            for k in group.array_keys()
            if k not in {"images", "spectra", "cross_sections", "labels", "n_particles", "centres_nm", "radii_nm"}
        )
        axis = array_node(group, axis_name)
        data = PairedData.paired(
            np.asarray(array_node(group, "images")[:]),
            np.asarray(array_node(group, "spectra")[:]),
            np.asarray(array_node(group, "labels")[:]),
        )
        return _resize(data, patch), np.asarray(axis[:]), str(axis.attrs.get("units", ""))
    run = read_run(path)
    if not run.images:
        raise RunStorageError(f"{path}: the run has no structural image to cut patches from")
    image = next(iter(run.images.values())).data
    pixels = np.asarray(array_node(group, "candidate_pixels")[:])
    measured = run.columns["candidate_index"]
    has = np.zeros(pixels.shape[0], bool)
    has[measured] = True
    spectra = np.zeros((pixels.shape[0], run.spectra.shape[1]), np.float32)
    spectra[measured] = run.spectra
    patches = extract_patches(image, pixels, patch)
    where = run.candidate_positions[:, :2] if run.candidate_positions.shape[1] >= 2 else None
    return PairedData(patches, spectra, has, positions=where), run.spectral_values, run.spectral_axis.units


def _resize(data: PairedData, patch: int) -> PairedData:
    """Block-average or crop patches to ``patch`` pixels (datasets may be written at another size)."""
    p = data.patch_size
    if p == patch:
        return data
    if p % patch == 0:
        k = p // patch
        small = data.patches.reshape(len(data), patch, k, patch, k).mean(axis=(2, 4))
        return PairedData(small.astype(np.float32), data.spectra, data.has_spectrum, data.labels)
    raise ConfigError(f"dataset patches are {p} px; cannot make {patch} px (use a divisor of {p})")
