"""Crash-safe Zarr runs: a write-ahead journal in front of chunk-sized Zarr appends.

The run layout (what a run holds) is in ``_layout``, the commit protocol in ``_writer``; see
``docs/run-layout.md``. Everything outside this package imports from here.

Each public class and function has an Example, run by the tests in this namespace after the
setup below (an Example that reads a run uses ``run_path``, a closed run such as
``engine.campaign.Campaign``'s Example writes).

Examples:
    >>> import tempfile
    >>> from pathlib import Path
    >>> import numpy as np
    >>> from engine.clock import SystemClock
    >>> from engine.io import from_grid
    >>> from engine.types import SpectralAxis
    >>> folder = Path(tempfile.mkdtemp())  # somewhere to write files
    >>> si = from_grid(np.ones((4, 5, 16)), np.arange(5.0), np.arange(4.0), "nm",
    ...                SpectralAxis("energy_loss", "eV", 0.0, 0.1, 16), "example")  # a small spectrum image
"""

from engine.storage._integrity import IntegrityReport, check_run
from engine.storage._layout import ensure_output_dir, new_run_path
from engine.storage._lock import live_writer
from engine.storage._reader import RunData, array_node, describe_ranges, open_run_group, read_candidates, read_run
from engine.storage._recovery import RecoveryReport, recover_run
from engine.storage._spectrum_images import ATTR as SPECTRUM_IMAGE_ATTR
from engine.storage._spectrum_images import read_spectrum_image, write_spectrum_image
from engine.storage._writer import RunWriter

__all__ = [
    # writing a run
    "RunWriter",
    "new_run_path",
    "ensure_output_dir",
    # reading a run
    "RunData",
    "read_run",
    "read_candidates",
    "open_run_group",
    "array_node",
    # integrity and recovery after a crash
    "IntegrityReport",
    "check_run",
    "live_writer",
    "describe_ranges",
    "RecoveryReport",
    "recover_run",
    # spectrum-image datasets (imported or simulated recordings)
    "SPECTRUM_IMAGE_ATTR",
    "read_spectrum_image",
    "write_spectrum_image",
]
