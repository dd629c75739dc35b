"""The report and figures say what the run did: its own scalariser, the signal's name and units (issue 25)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from engine.io import import_file
from engine.report import run_property, write_report
from engine.storage import read_run
from tests.engine.storage.test_integrity import _record
from tests.engine.storage.writer_child import make_run

ROOT = Path(__file__).resolve().parents[3]
BEPS = ROOT.parent / "shared" / "data" / "BEPS_PTO_50x50.h5"


def _run_with(tmp_path: Path, config_toml: str, rows: int = 0) -> Path:
    path = tmp_path / "r.zarr"
    writer = make_run(path, chunk_rows=4)
    for i in range(rows):
        _record(writer, i, i, "gp-position")
    writer.close()
    # the configuration is stored verbatim at creation; rewrite it as a campaign would have
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["dualscope"]["config_toml"] = config_toml
    (path / "zarr.json").write_text(json.dumps(meta))
    return path


def test_the_report_maps_the_campaigns_own_scalariser(tmp_path: Path) -> None:
    path = _run_with(
        tmp_path, '[policy]\nname = "gp-position"\n[policy.scalariser]\nkind = "peak"\nlow = 1\nhigh = 4\n'
    )
    scalar, what = run_property(read_run(path))
    assert what == "peak position over 1–4 eV (eV)"
    axis = np.linspace(0.0, 4.9, 50)
    spectra = np.exp(-(((axis - 2.5) / 0.2) ** 2))[None]
    assert scalar(spectra, axis)[0] == pytest.approx(2.5, abs=0.05)


def test_a_band_replaces_the_scalariser_and_no_scalariser_means_the_total(tmp_path: Path) -> None:
    path = _run_with(tmp_path, '[policy]\nname = "random"\n')
    run = read_run(path)
    assert run_property(run)[1] == "total counts (summed over all channels)"
    assert run_property(run, "0.7:0.9")[1] == "counts summed over 0.7–0.9 eV"


def test_recorded_signals_keep_their_name_and_units() -> None:
    si = import_file(BEPS)
    assert si.signal == "Piezoresponse (a.u.)" and si.spectral_axis.units == "V"


def test_latents_are_no_longer_coloured_by_the_zero_loss_tail() -> None:
    from engine.report._surrogate_figures import _colour_values
    from engine.surrogate import PairedData

    data = PairedData.paired(np.zeros((3, 8, 8), np.float32), np.ones((3, 5), np.float32))
    assert _colour_values(data, None)[1] == "integrated signal (sum over channels)"
    assert _colour_values(data, (np.arange(3.0), "peak position (eV)"))[1] == "peak position (eV)"


def test_the_written_report_names_the_scalariser_after_training_its_surrogate(tmp_path: Path) -> None:
    config = '[policy]\nname = "gp-position"\n[policy.scalariser]\nkind = "peak"\nlow = 1\nhigh = 4\n'
    path = _run_with(tmp_path, config, rows=24)
    page = tmp_path / "r.html"
    write_report(path, page, steps=3)  # trains the report's own surrogate (at least 20 spectra)
    assert "The property mapped is the peak position over 1–4 eV (eV) of each spectrum" in page.read_text()
