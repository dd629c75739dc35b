"""A power cut in a pipelined campaign: the rows it took from the run come back from the instrument.

With group commit the loop tells the policy a row once it is written and a syncer thread makes it
durable a few milliseconds later; a power cut in between takes the row from the run but not from
the microscope, which keeps its replies by request id. Here the engine runs in a child process under
the page-cache model and loses power just before a sync of its journal (so what that sync would have
made durable is gone); the instrument goes on. ``dualscope resume`` on what the disk kept must fetch
the lost steps back (never measure them again): up to the last of them, the run holds exactly the rows
of an uninterrupted run of the same seed against a second instrument. (Later decisions may differ: the
policy's random state after the lost steps was lost with them.)
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.reliability import COLUMNS, ROOT, _serve
from engine.campaign import LOST_POLICY
from engine.cli.main import main as dualscope
from engine.storage import check_run, read_candidates, read_run

BUDGET = 24
CUTS = (3, 9)
"""The journal syncs before which the power goes (one campaign each, on its own instrument)."""


def _config(directory: Path, endpoint: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "runs").mkdir()
    path = directory / "campaign.toml"
    path.write_text(
        f'[run]\nname = "cut"\noutput_dir = "{directory / "runs"}"\nseed = 5\nchunk_rows = 8\nfigure = false\n'
        "pipeline = true\n"
        f'[instrument]\nmode = "connect"\nendpoint = "{endpoint}"\nimage_channel = "haadf"\ntimeout_s = 10\n'
        "[candidates]\nstride_px = 4\n"
        '[policy]\nname = "gp-position"\ninitial = 4\ntraining = "inline"\n'
        '[policy.scalariser]\nkind = "band"\nlow = 1.0\nhigh = 2.0\n'
        f"[stop]\nbudget = {BUDGET}\n"
    )
    return path


def _stop(server: subprocess.Popen[str]) -> None:
    server.send_signal(signal.SIGTERM)
    server.communicate(timeout=20)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The rows of the same campaign, never interrupted, against an instrument of the same seed."""
    server, endpoint = _serve()
    try:
        config = _config(tmp_path_factory.mktemp("reference") / "campaign", endpoint)
        with pytest.raises(SystemExit) as ended:
            dualscope(["run", str(config)])
        assert ended.value.code in (0, None)
    finally:
        _stop(server)
    (path,) = (config.parent / "runs").glob("*.zarr")
    run = read_run(path)
    return {k: run.columns[k] for k in COLUMNS}


@pytest.mark.parametrize("cut_at", CUTS)
def test_a_power_cut_loses_nothing_the_instrument_measured(
    tmp_path: Path, reference: dict[str, np.ndarray], cut_at: int, capsys: pytest.CaptureFixture[str]
) -> None:
    server, endpoint = _serve()
    try:
        config = _config(tmp_path / "campaign", endpoint)
        image = tmp_path / "after-the-cut"
        child = subprocess.run(
            [sys.executable, "-m", "tests.engine.campaign.power_cut_child", str(config),
             str(config.parent / "runs"), str(cut_at), str(image)],
            cwd=ROOT, capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        assert child.returncode == 137 and "CUT" in child.stdout, child.stdout + child.stderr[-3000:]
        (path,) = image.glob("*.zarr")
        told = read_run(path, damaged_ok=True)  # what the disk kept (before recovery)
        with pytest.raises(SystemExit) as ended:
            dualscope(["resume", str(path)])
        assert ended.value.code in (0, None)
    finally:
        _stop(server)
    run = read_run(path)
    assert run.attrs["status"] == "closed" and not run.attrs.get("repeats") and check_run(path)[1].ok
    cands = read_candidates(path).positions[run.columns["candidate_index"]]
    np.testing.assert_allclose(run.positions, cands, atol=1e-9, err_msg="a row measured elsewhere than its candidate")
    (resume,) = run.attrs["resumes"]
    fetched = resume.get("fetched_from_instrument", [])
    assert fetched, f"the cut at sync {cut_at} took nothing the instrument had measured ({told.n} rows kept): {resume}"
    # every step the instrument made before the cut is in the run, as it measured it (the same rows as the
    # uninterrupted run up to there), once: fetched, never measured again
    last = max(int(rid.rsplit("-", 1)[1]) for rid in fetched)
    before = int(np.searchsorted(run.columns["step"], last, side="right"))
    assert before > told.n
    for name in COLUMNS:
        np.testing.assert_array_equal(run.columns[name][:before], reference[name][:before], err_msg=name)
    recovered = run.columns["policy_code"] == run.policy_names.index(LOST_POLICY)
    assert int(recovered.sum()) == len(fetched)  # recorded as fetched from the instrument, not as decided
    said = " ".join(capsys.readouterr().out.split())  # the console folds long lines
    assert f"Fetched from the instrument: {len(fetched)} steps" in said
    assert np.unique(run.columns["candidate_index"]).size == run.n == BUDGET  # nothing measured twice
