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
    >>> xs = 20.0 + 5.0 * np.arange(8)  # an 8 x 8 scan in 5 nm steps, and a HAADF of the field in 0.5 nm pixels
    >>> scan_file, haadf_file = folder / "si.npz", folder / "haadf.npz"
    >>> np.savez(scan_file, spectra=np.ones((8, 8, 16)), x=xs, y=xs, length_units="nm")
    >>> centres = 0.25 + 0.5 * np.arange(200)
    >>> np.savez(haadf_file, image=np.random.default_rng(0).random((200, 200)), image_x=centres, image_y=centres,
    ...          length_units="nm")
    >>> si, image = import_file(scan_file), read_structural_image(haadf_file)
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
    from engine.io._export import EXPORT_FORMATS, export, run_dataset
    from engine.io._importers import ImportFailed, from_grid, import_file
    from engine.io._pairing import pair_image, read_structural_image
    from engine.io._replay import ReplaySetup, replay_setup

__all__ = [
    # recorded spectrum images (.h5, .npz/.npy, .emd, .dm3/.dm4, .3ds, Zarr)
    "import_file",
    "from_grid",
    "ImportFailed",
    # a structural image from another file, paired by calibration
    "read_structural_image",
    "pair_image",
    # data out: xarray, HyperSpy, NeXus, CSV
    "run_dataset",
    "export",
    "EXPORT_FORMATS",
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
