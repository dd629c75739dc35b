"""Users' files: importers of recorded spectrum images, training datasets, surrogate checkpoints.

Everything outside this package imports from here.

Each public class and function has an Example, run by the tests in this namespace after the
setup below (an Example that reads a run uses ``run_path``, a closed run such as
``engine.campaign.Campaign``'s Example writes).

Examples:
    >>> import shutil, tempfile
    >>> from pathlib import Path
    >>> import numpy as np, torch
    >>> from engine.surrogate import Surrogate, SurrogateConfig
    >>> folder = Path(tempfile.mkdtemp())  # somewhere to write files
    >>> grid = folder / "grid.npz"
    >>> np.savez(grid, spectra=np.ones((4, 5, 16)))  # a (ny, nx, c) spectrum image; axes in pixels and channels
    >>> run_copy = Path(shutil.copytree(run_path, folder / "run.zarr"))  # a run to write into
    >>> data, energy, units = load_paired(run_path, patch=8)  # the run's patches and spectra
    >>> model = Surrogate(SurrogateConfig(batch_size=8), 8, data.channels, device=torch.device("cpu"))
    >>> _ = model.fit(data, 3)  # a (barely) trained dual VAE
"""

from typing import TYPE_CHECKING

from engine._lazy import lazy_face

if TYPE_CHECKING:  # imported on first use: see engine._lazy
    from engine.io._checkpoints import (
        FEATURES_DIR,
        load_feature_checkpoint,
        load_surrogate,
        save_feature_checkpoint,
        save_surrogate,
    )
    from engine.io._datasets import load_paired
    from engine.io._importers import ImportFailed, from_grid, import_file
    from engine.io._replay import ReplaySetup, replay_setup

__all__ = [
    # recorded spectrum images (.h5, .npz/.npy, .emd, .dm3/.dm4, .3ds, Zarr)
    "import_file",
    "from_grid",
    "ImportFailed",
    # replaying recorded data
    "replay_setup",
    "ReplaySetup",
    # training data
    "load_paired",
    # checkpoints
    "save_surrogate",
    "load_surrogate",
    "save_feature_checkpoint",
    "load_feature_checkpoint",
    "FEATURES_DIR",
]

__getattr__, __dir__ = lazy_face(__name__, __file__)
