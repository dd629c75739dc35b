"""Importers on the real files in ../shared/data, the replay driver, and replay campaigns over ZeroMQ."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from engine.clock import SystemClock
from engine.config import parse_config
from engine.errors import NoRecordedData
from engine.io import ImportFailed, import_file
from engine.storage import read_run, read_spectrum_image, write_spectrum_image
from instruments.local import LocalInstrument
from instruments.replay import ReplayDriver

ROOT = Path(__file__).resolve().parents[3]
DATA = ROOT.parent / "shared" / "data"
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def test_beps_h5_keeps_axes_and_units() -> None:
    si = import_file(DATA / "BEPS_PTO_50x50.h5")
    assert si.spectra.shape == (2500, 64) and si.positions.shape == (2500, 2)
    assert si.spectral_axis.units == "V" and si.spectral_axis.points  # the triangular sweep is not linear
    v = si.spectral_axis.values()
    assert v.max() == pytest.approx(8.5) and v.min() == pytest.approx(-8.5)
    assert si.axes[0].units == "nm" and si.axes[0].high == pytest.approx(2000 + 2000 / 49 / 2, rel=1e-3)
    assert any("no structural image" in n for n in si.notes)
    # the re-packed .npz is the same data
    npz = import_file(DATA / "BEPS_PTO_50x50_parsed.npz")
    np.testing.assert_allclose(npz.spectra, si.spectra)
    np.testing.assert_allclose(npz.positions, si.positions)


def test_velox_emd_pairs_haadf_and_eds() -> None:
    si = import_file(DATA / "fei_emd_si.emd")
    assert si.spectra.shape == (256, 4096) and si.image.data.shape == (16, 16)
    assert si.spectral_axis.units == "keV" and si.spectral_axis.scale == pytest.approx(0.01)
    assert si.spectral_axis.offset == pytest.approx(-1.0)
    assert si.image.x_axis.scale == pytest.approx(5.3024, rel=1e-4) and si.image.x_axis.units == "nm"
    # the HAADF pixels and the EDS positions coincide here (no oversampling)
    np.testing.assert_array_equal(si.pixels()[:3], [[0, 0], [0, 1], [0, 2]])
    assert si.spectra.sum() > 0


def test_single_dm3_spectrum_is_read_but_cannot_be_replayed() -> None:
    with pytest.raises(ImportFailed, match=r"AL-DFoffset0.00.dm3: no spectrum image .*\(2048,\)"):
        import_file(DATA / "AL-DFoffset0.00.dm3")


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("broken.h5", b"not an hdf5 file at all", "cannot read it"),
        ("broken.emd", b"\x00" * 100, "cannot read it as .emd"),
        ("data.xyz", b"", "unsupported format '.xyz'"),
        ("empty.npz", None, "needs a 'spectra' array"),
    ],
)
def test_corrupt_and_unsupported_files_name_the_file_and_the_problem(
    tmp_path: Path, name: str, content: bytes | None, match: str
) -> None:
    path = tmp_path / name
    if content is None:
        np.savez(path, other=np.zeros(3))
    else:
        path.write_bytes(content)
    with pytest.raises(ImportFailed, match=match) as info:
        import_file(path)
    assert str(path) in str(info.value)
    with pytest.raises(ImportFailed, match="no such file"):
        import_file(tmp_path / "missing.h5")


def test_generated_npz_with_oversampled_image(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    spectra = rng.random((4, 5, 10)).astype(np.float32)
    image = rng.random((16, 20)).astype(np.float32)  # 4x oversampled relative to the spectrum grid
    x, y = np.arange(5) * 4.0 + 1.5, np.arange(4) * 4.0 + 1.5
    np.savez(
        tmp_path / "si.npz", spectra=spectra, image=image, x=x, y=y, length_units="nm",
        spectral_axis=np.linspace(1, 2, 10), spectral_name="energy", spectral_units="eV",
    )  # fmt: skip
    si = import_file(tmp_path / "si.npz")
    assert si.image.data.shape == (16, 20) and si.spectral_axis.units == "eV" and not si.spectral_axis.points
    assert si.image.x_axis.scale == pytest.approx(1.0)  # the 4x oversampled image spans the same 20 nm
    assert si.image.x_axis.offset == pytest.approx(0.0)
    rows_cols = si.pixels()
    np.testing.assert_array_equal(rows_cols[1], [1, 5])  # spectrum (x=5.5, y=1.5) sits on image pixel (1, 5)
    write_spectrum_image(si, tmp_path / "ds.zarr")
    back = read_spectrum_image(tmp_path / "ds.zarr")
    np.testing.assert_array_equal(back.spectra, si.spectra)
    assert import_file(tmp_path / "ds.zarr").spectra.shape == (20, 10)


def test_replay_driver_serves_recorded_spectra_and_refuses_off_grid() -> None:
    si = import_file(DATA / "BEPS_PTO_50x50.h5")
    inst = LocalInstrument(ReplayDriver(si, SystemClock(), np.random.default_rng(0)))
    desc = inst.describe()
    assert desc.spectral_axis.points and desc.name == "dualscope-replay"
    m = inst.measure(si.positions[[10, 777]] + 5.0)  # within half the 40.8 nm spacing
    np.testing.assert_array_equal(m.spectra, si.spectra[[10, 777]])
    between = (si.positions[0] + si.positions[51]) / 2  # the middle of a grid cell
    with pytest.raises(NoRecordedData, match="from the nearest recorded point"):  # missing there, not a fault
        inst.measure(between[None])
    np.testing.assert_array_equal(inst.acquire_image("structure").data, si.image.data)


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "engine.cli.main", *args], cwd=cwd, capture_output=True, text=True, timeout=300, env=env
    )


@pytest.mark.parametrize("name", ["BEPS_PTO_50x50.h5", "fei_emd_si.emd"])
def test_replay_end_to_end_over_zeromq(tmp_path: Path, name: str) -> None:
    result = _cli(
        "replay", str(DATA / name), "--policy", "random", "--budget", "100", "--output-dir", str(tmp_path), cwd=ROOT
    )
    assert result.returncode == 0, result.stdout + result.stderr
    run_path = next(tmp_path.glob("replay-*.zarr"))
    run = read_run(run_path)
    assert run.n == 100 and run.description.name == "dualscope-replay"
    stored = parse_config(run.attrs["config_toml"])  # what `dualscope resume` rebuilds the campaign from
    assert stored.instrument.driver == "replay" and stored.stop.budget == 100
    assert stored.instrument.options["dataset"] == str((DATA / name).resolve())
    si = import_file(DATA / name)
    idx, dist = si.nearest(run.positions)
    assert np.all(dist < 1e-6)
    np.testing.assert_array_equal(run.spectra, si.spectra[idx])
    assert run_path.with_suffix(".png").exists()
    assert _cli("inspect", str(run_path), cwd=ROOT).returncode == 0


def test_replay_is_deterministic(tmp_path: Path) -> None:
    runs = []
    for k in range(2):
        out = tmp_path / f"r{k}"
        assert (
            _cli(
                "replay",
                str(DATA / "BEPS_PTO_50x50.h5"),
                "--policy",
                "random",
                "--budget",
                "40",
                "--seed",
                "7",
                "--output-dir",
                str(out),
                cwd=ROOT,
            ).returncode
            == 0
        )
        runs.append(read_run(next(out.glob("*.zarr"))).columns["candidate_index"])
    np.testing.assert_array_equal(runs[0], runs[1])
    other = tmp_path / "other"
    _cli(
        "replay",
        str(DATA / "BEPS_PTO_50x50.h5"),
        "--policy",
        "random",
        "--budget",
        "40",
        "--seed",
        "8",
        "--output-dir",
        str(other),
        cwd=ROOT,
    )
    assert not np.array_equal(read_run(next(other.glob("*.zarr"))).columns["candidate_index"], runs[0])


def test_import_cli(tmp_path: Path) -> None:
    result = _cli("import", str(DATA / "fei_emd_si.emd"), "--out", str(tmp_path / "emd.zarr"), cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "256 spectra × 4096 channels" in result.stdout
    bad = _cli("import", str(DATA / "AL-DFoffset0.00.dm3"), "--out", str(tmp_path / "dm3.zarr"), cwd=ROOT)
    assert bad.returncode == 2 and "no spectrum image" in bad.stderr


class _PageParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.headings: list[str] = []
        self.images: list[str] = []
        self.refresh = False
        self._in_h2 = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag in ("img", "meta"):  # void elements
            if tag == "img":
                self.images.append(a["src"] or "")
            if a.get("http-equiv") == "refresh":
                self.refresh = True
            return
        self.stack.append(tag)
        self._in_h2 = tag == "h2"

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}> after {self.stack[-3:]}"
        self.stack.pop()
        self._in_h2 = False

    def handle_data(self, data: str) -> None:
        if self._in_h2:
            self.headings.append(data)


def test_report_of_a_replayed_run_is_a_valid_self_contained_page(tmp_path: Path) -> None:
    """Chromium is not installed here, so the page is validated by parsing: balanced tags, every
    section present, every image an embedded PNG that decodes."""
    out = tmp_path / "runs"
    assert (
        _cli("replay", str(DATA / "BEPS_PTO_50x50.h5"), "--budget", "60", "--output-dir", str(out), cwd=ROOT).returncode
        == 0
    )
    run_path = next(out.glob("*.zarr"))
    result = _cli("report", str(run_path), "--train-steps", "30", "--band", "0:8.5", cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    page = run_path.with_suffix(".html").read_text()
    parser = _PageParser()
    parser.feed(page)
    assert parser.stack == []
    assert parser.headings == ["Where the loop looked", "Property map", "Discovery", "Latent spaces", "Timing"]
    for src in parser.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert not parser.refresh and "<script" not in page and "http" not in page.replace("http-equiv", "")
    followed = _cli(
        "report", str(run_path), "--follow", "--train-steps", "0", "--out", str(tmp_path / "f.html"), cwd=ROOT
    )
    assert followed.returncode == 0 and "(closed)" in followed.stdout  # a closed run: written once, then done
    bad = _cli("report", str(run_path), "--band", "oops", cwd=ROOT)
    assert bad.returncode == 2 and "--band wants LOW:HIGH in V" in bad.stderr


def test_replay_of_a_run_marks_positions_it_never_measured(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[run]\nname = "src"\noutput_dir = "{tmp_path}"\nfigure = false\n[instrument]\nmode = "local"\n'
        "[instrument.options]\nimage_pixels = 64\nn_channels = 32\nacquisition_time_s = 0.0\n"
        '[candidates]\nstride_px = 4\n[policy]\nname = "random"\n[stop]\nbudget = 80\n'
    )
    assert _cli("run", str(cfg), cwd=ROOT).returncode == 0
    source = next(tmp_path.glob("src-*.zarr"))
    original = read_run(source)
    outs = []
    for k in range(2):
        out = tmp_path / f"replay{k}"
        result = _cli("replay", str(source), "--policy", "raster", "--budget", "30", "--output-dir", str(out), cwd=ROOT)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "never measured in the recording" in result.stdout
        outs.append(read_run(next(out.glob("*.zarr"))))
    a, b = outs
    np.testing.assert_array_equal(a.columns["candidate_index"], b.columns["candidate_index"])

    def decisions(run: object) -> list[tuple[int, list[int]]]:
        return [(m["step"], m["candidates"]) for m in run.attrs["missing"]]  # type: ignore[attr-defined]

    assert decisions(a) == decisions(b) != []  # request ids differ (they carry the run id); decisions do not
    # every replayed spectrum is the original one at that candidate; missing ones were never measured
    measured = set(original.columns["candidate_index"].tolist())
    for cand, spectrum in zip(a.columns["candidate_index"], a.spectra, strict=True):
        assert cand in measured
        np.testing.assert_array_equal(spectrum, original.spectra[list(original.columns["candidate_index"]).index(cand)])
    missing = {c for m in a.attrs["missing"] for c in m["candidates"]}
    assert missing and not (missing & measured)
    summary = _cli("inspect", str(a.path), "--json", cwd=ROOT)
    assert summary.returncode == 0 and '"missing_positions": ' + str(len(missing)) in summary.stdout


def write_3ds(path: Path, nx: int, ny: int, points: int, rng: np.random.Generator) -> np.ndarray:
    """A small Nanonis grid file in the documented layout (big-endian float32 after the header)."""
    header = "\r\n".join(
        [
            f'Grid dim="{nx} x {ny}"',
            "Grid settings=5.000000E-8;6.000000E-8;1.000000E-7;8.000000E-8;0.000000E+0",
            'Sweep Signal="Bias (V)"',
            'Fixed parameters="Sweep Start;Sweep End"',
            'Experiment parameters="X (m);Y (m);Z (m)"',
            "# Parameters (4 byte)=5",
            f"Experiment size (bytes)={4 * points}",
            f"Points={points}",
            'Channels="Current (A)"',
            "Delay before measuring (s)=0.000000E+0",
            'Experiment="Grid Spectroscopy"',
            'Start time="25.11.2026 10:00:00"',
            'End time="25.11.2026 10:05:00"',
            "User=",
            "Comment=",
            ":HEADER_END:",
            "",
        ]
    )
    current = rng.normal(size=(ny, nx, points)).astype(">f4")
    z = rng.normal(size=(ny, nx)).astype(">f4")
    params = np.stack(
        [np.full((ny, nx), -1.0), np.full((ny, nx), 1.0), np.zeros((ny, nx)), np.zeros((ny, nx)), z], axis=2
    ).astype(">f4")
    with path.open("wb") as f:
        f.write(header.encode("latin-1"))
        f.write(np.concatenate([params, current], axis=2).astype(">f4").tobytes())
    return current.astype(np.float32)


def test_nanonis_3ds_grid(tmp_path: Path) -> None:
    current = write_3ds(tmp_path / "grid.3ds", 5, 4, 16, np.random.default_rng(0))
    si = import_file(tmp_path / "grid.3ds")
    assert si.spectra.shape == (20, 16) and si.spectral_axis.units == "V" and si.spectral_axis.name == "bias"
    assert si.spectral_axis.values()[0] == pytest.approx(-1.0) and si.spectral_axis.values()[-1] == pytest.approx(1.0)
    np.testing.assert_allclose(si.spectra, current.reshape(20, 16))
    assert si.axes[0].units == "nm" and si.positions[0, 0] == pytest.approx(
        50 - 50 + 10
    )  # centre 50 nm, 100 nm wide, 5 px
    assert si.image.data.shape == (4, 5)
    (tmp_path / "cut.3ds").write_bytes((tmp_path / "grid.3ds").read_bytes()[:200])
    with pytest.raises(ImportFailed, match=r"cut\.3ds: cannot read it as a Nanonis grid"):
        import_file(tmp_path / "cut.3ds")
