"""Exploratory analysis of a spectrum image before trusting an autonomous loop.

The methods (band maps, PCA, NMF, spectral-VAE labels, a labelling classifier, separated VAEs
beside the dual VAE), their figures, and the session that runs them and saves results.zarr and an
HTML page. Everything outside this package imports from here.

Each public class and function has an Example, run by the tests in this namespace after the
setup below (an Example that reads a run uses ``run_path``, a closed run such as
``engine.campaign.Campaign``'s Example writes).

Examples:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> axis = np.linspace(0.0, 3.0, 32)  # a spectral axis, eV
    >>> peaks = np.exp(-((axis - 1.0) / 0.2) ** 2), np.exp(-((axis - 2.0) / 0.2) ** 2)
    >>> mix = rng.random((40, 1))
    >>> spectra = mix * peaks[0] + (1 - mix) * peaks[1] + 0.01 * rng.random((40, 32))  # 40 mixtures of two peaks
    >>> from engine.io import import_file
    >>> si = import_file(run_path)  # a run's measured positions, spectra and structural image
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())  # somewhere to write files
"""

from typing import TYPE_CHECKING

from engine._lazy import lazy_face

if TYPE_CHECKING:  # imported on first use: see engine._lazy
    from engine.explore._figures import (
        band_figure,
        comparison_figure,
        decomposition_figure,
        labelling_figure,
        vae_figure,
    )
    from engine.explore._methods import (
        Decomposition,
        DualVsSeparated,
        Labelling,
        LatentLabels,
        SeparatedVAEs,
        band_map,
        dual_vs_separated,
        label_map,
        nmf,
        pca,
        r2_score,
        separated_vaes,
        spectral_vae_labels,
    )
    from engine.explore._session import (
        METHODS,
        METRIC_MEANINGS,
        Exploration,
        explore_spectrum_image,
        patches_of,
        read_labels,
        save_exploration,
    )

__all__ = [
    # a session: run the methods, save and reload the results
    "METHODS",
    "METRIC_MEANINGS",
    "Exploration",
    "explore_spectrum_image",
    "save_exploration",
    "read_labels",
    "patches_of",
    # methods
    "band_map",
    "pca",
    "nmf",
    "Decomposition",
    "spectral_vae_labels",
    "LatentLabels",
    "label_map",
    "Labelling",
    "separated_vaes",
    "SeparatedVAEs",
    "dual_vs_separated",
    "DualVsSeparated",
    "r2_score",
    # figures
    "band_figure",
    "decomposition_figure",
    "vae_figure",
    "labelling_figure",
    "comparison_figure",
]

__getattr__, __dir__ = lazy_face(__name__, __file__)
