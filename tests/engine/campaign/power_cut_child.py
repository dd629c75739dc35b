"""Child process of the campaign power-cut test: ``dualscope run`` until its N-th fsync, then the power goes.

``python -m tests.engine.campaign.power_cut_child CONFIG OUTPUT_DIR CUT_AT IMAGE_DIR`` runs the
campaign of ``CONFIG`` (whose runs go to the empty ``OUTPUT_DIR``) under the page-cache model of
``tests/engine/storage/page_cache.py``. Just before the ``CUT_AT``-th sync of its journal's syncer
thread (group commit: the rows that sync would make durable are the ones lost) it writes into
``IMAGE_DIR`` what a power cut at that moment leaves on disk (``strict``: nothing that was not
fsynced), prints ``CUT`` and exits at once with status 137, as the engine's computer would stop. The
instrument (another process) goes on as a microscope would. A campaign that ends first prints ``DONE``.
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.cli.main import main as dualscope
from tests.engine.storage.page_cache import PageCache, page_cache


def main(config: str, output_dir: str, cut_at: int, image_dir: str) -> None:
    """Run the campaign and cut the power at the journal's sync ``cut_at``."""
    seen = 0

    def at_sync(cache: PageCache) -> None:
        nonlocal seen
        if threading.current_thread().name != "journal-sync":
            return
        seen += 1
        if seen == cut_at:
            cache.crash_image(Path(image_dir), "strict", np.random.default_rng(0))
            print("CUT", flush=True)
            os._exit(137)

    patch = pytest.MonkeyPatch()
    try:
        with page_cache(Path(output_dir), patch, at_sync):
            dualscope(["run", config])
    finally:
        patch.undo()
    print("DONE", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])
