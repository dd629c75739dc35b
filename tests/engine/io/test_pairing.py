"""A spectrum image and its HAADF from separate files, paired by their calibrations (`dualscope import --image`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from engine.io import ImportFailed, import_file, pair_image, read_structural_image
from engine.storage import read_spectrum_image
from tests.engine.cli.test_cli import _cli

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data"


def _specimen(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """A smooth field (nm in, arbitrary intensity out): what the HAADF and the scan both look at."""
    return np.sin(x / 7.0)[None, :] * np.cos(y / 11.0)[:, None] + 2.0


def _files(tmp_path: Path, image_offset_nm: float = 0.0) -> tuple[Path, Path]:
    """An 8 x 8 scan (5 nm steps from 20 nm) and a 400 x 400 HAADF in 0.25 nm pixels from ``image_offset_nm``."""
    xs = 20.0 + 5.0 * np.arange(8)
    scan = tmp_path / "si.npz"
    np.savez(scan, spectra=np.ones((8, 8, 16)), x=xs, y=xs, length_units="nm")
    centres = image_offset_nm + 0.125 + 0.25 * np.arange(400)
    haadf = tmp_path / "haadf.npz"
    np.savez(haadf, image=_specimen(centres, centres), image_x=centres / 1e9, image_y=centres / 1e9, length_units="m")
    return scan, haadf


@pytest.mark.parametrize("offset", [0.0, 3.3])
def test_the_image_is_resampled_onto_the_scan_by_both_calibrations(tmp_path: Path, offset: float) -> None:
    """The paired image at each probe position is the specimen there, whatever the image's offset and units."""
    scan, haadf = _files(tmp_path, offset)
    paired = pair_image(import_file(scan), read_structural_image(haadf), str(haadf))
    assert paired.image.data.shape == (160, 160)  # 5 nm steps of 0.25 nm pixels: 20 per step
    rows, cols = (np.round((paired.positions[:, k] - off) / s).astype(int)
                  for k, off, s in ((1, paired.image.y_axis.offset, paired.image.y_axis.scale),
                                    (0, paired.image.x_axis.offset, paired.image.x_axis.scale)))  # fmt: skip
    at_probes = paired.image.data[rows, cols]
    truth = np.array([_specimen(np.array([x]), np.array([y]))[0, 0] for x, y in paired.positions])
    np.testing.assert_allclose(at_probes, truth, atol=0.02)  # the probe's pixel shows the specimen under the probe
    assert paired.axes[0].low == 17.5 and paired.axes[0].high == 57.5  # the scan's field, edges included
    assert any("resampled onto the scan's field (20 x 20 px per scan step)" in n for n in paired.notes)
    assert not any(n.startswith("no structural image") for n in paired.notes)


def test_fields_that_do_not_contain_the_scan_are_refused_naming_both(tmp_path: Path) -> None:
    scan, haadf = _files(tmp_path, image_offset_nm=500.0)
    with pytest.raises(ImportFailed, match=r"the image covers x 500 to 600, .* scan x 17.5 to 57.5"):
        pair_image(import_file(scan), read_structural_image(haadf), str(haadf))
    uncalibrated = tmp_path / "px.npz"
    np.savez(uncalibrated, image=np.ones((10, 10)))
    with pytest.raises(ImportFailed, match="no spatial calibration"):
        read_structural_image(uncalibrated)


def test_dualscope_import_pairs_a_separate_haadf_and_refuses_a_stranger(tmp_path: Path) -> None:
    scan, haadf = _files(tmp_path)
    done = _cli("import", str(scan), "--image", str(haadf), "--out", str(tmp_path / "si.zarr"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "image (160, 160)" in done.stdout and "structural image from" in done.stdout
    assert read_spectrum_image(tmp_path / "si.zarr").image.data.shape == (160, 160)
    (tmp_path / "far").mkdir()
    far_scan, far_haadf = _files(tmp_path / "far", 500.0)
    refused = _cli("import", str(far_scan), "--image", str(far_haadf), "--out", str(tmp_path / "far.zarr"))
    assert refused.returncode == 2 and "does not contain the scan" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "far.zarr").exists()


def test_the_real_velox_haadf_pairs_with_its_own_spectrum_image() -> None:
    """Real data: the .emd's HAADF read as a separate image lands exactly on its 16 x 16 EDS scan."""
    data = DATA / "fei_emd_si.emd"
    si = import_file(data)
    paired = pair_image(si, read_structural_image(data), str(data))
    assert paired.image.data.shape == si.image.data.shape == (16, 16)
    np.testing.assert_allclose(paired.image.data, si.image.data, rtol=1e-5)  # same calibration: the same pixels
