"""What a person reads: the run summary, figures, the HTML report, discovery metrics, training reports.

Everything outside this package imports from here.

Each public class and function has an Example, run by the tests in this namespace after the
setup below (an Example that reads a run uses ``run_path``, a closed run such as
``engine.campaign.Campaign``'s Example writes).

Examples:
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np, torch
    >>> from engine.io import load_paired
    >>> from engine.storage import check_run, read_run
    >>> from engine.surrogate import Surrogate, SurrogateConfig
    >>> folder = Path(tempfile.mkdtemp())  # somewhere to write files
    >>> data, energy, units = load_paired(run_path, patch=8)  # the run's patches and spectra
    >>> model = Surrogate(SurrogateConfig(batch_size=8), 8, data.channels, device=torch.device("cpu"))
    >>> _ = model.fit(data, 3)  # a (barely) trained dual VAE
    >>> held_out = data.subset(np.flatnonzero(data.has_spectrum))
"""

from typing import TYPE_CHECKING

from engine._lazy import lazy_face

if TYPE_CHECKING:  # imported on first use: see engine._lazy
    from engine.report._colours import categorical_colours
    from engine.report._discovery import discovery_curves, measurements_to, recall_curve, top_set
    from engine.report._html import (
        Band,
        Section,
        discovery_figure,
        drift_figure,
        latent_figure,
        load_sections,
        property_figure,
        render_html,
        run_sections,
        save_sections,
        timing_figure,
    )
    from engine.report._run_report import run_property, write_report
    from engine.report._run_summary import decisions_without_model, run_summary
    from engine.report._summary_figure import summary_figure
    from engine.report._surrogate_figures import dual_latent_figure, latent_grid_figure, prediction_figure
    from engine.report._training import TrainingOutcome, train_surrogate

__all__ = [
    # a run
    "run_summary",
    "decisions_without_model",
    "summary_figure",
    "write_report",
    "run_property",
    # discovery metrics
    "top_set",
    "recall_curve",
    "measurements_to",
    "discovery_curves",
    # HTML pages and their figures
    "render_html",
    "run_sections",
    "Section",
    "save_sections",
    "load_sections",
    "Band",
    "timing_figure",
    "property_figure",
    "discovery_figure",
    "drift_figure",
    "latent_figure",
    "categorical_colours",
    # surrogates
    "train_surrogate",
    "TrainingOutcome",
    "dual_latent_figure",
    "latent_grid_figure",
    "prediction_figure",
]

__getattr__, __dir__ = lazy_face(__name__, __file__)
