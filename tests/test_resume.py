"""``dualscope resume``: SIGKILL a campaign at random moments, resume it each time, compare with an uninterrupted run.

Both campaigns talk to their own ``dualscope serve synthetic`` process with the same seed (an
instrument that outlives the engine, as a microscope does), so the same measurements in the same
order give the same spectra. The engine processes are forked from a preloaded server
(``multiprocessing`` forkserver) so that each start costs milliseconds, not an import of torch.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from engine.cli.main import main
from engine.storage import read_run
from engine.storage.integrity import check_run

ROOT = Path(__file__).parent.parent
KILLS = int(os.environ.get("DUALSCOPE_KILLS", "50"))
BUDGET = 50
SERVE = (sys.executable, "-m", "engine.cli.main", "serve", "synthetic", "--seed", "3")


def _serve() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*SERVE, "-o", "image_pixels=64", "-o", "n_channels=64", "-o", "acquisition_time_s=0.1"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    ready = re.match(r"READY (tcp://127\.0\.0\.1:\d+)", proc.stdout.readline())
    assert ready, "the server did not start"
    return proc, ready.group(1)


def _config(directory: Path, endpoint: str) -> Path:
    directory.mkdir()
    path = directory / "campaign.toml"
    path.write_text(
        f'[run]\nname = "kill"\noutput_dir = "{directory}"\nseed = 11\nchunk_rows = 4\nfigure = false\n'
        f'[instrument]\nmode = "connect"\nendpoint = "{endpoint}"\nimage_channel = "haadf"\ntimeout_s = 10\n'
        "[candidates]\nstride_px = 4\n"
        '[policy]\nname = "gp-position"\ninitial = 4\ntraining = "inline"\n'
        '[policy.scalariser]\nkind = "band"\nlow = 1.0\nhigh = 2.0\n'
        f"[stop]\nbudget = {BUDGET}\n"
    )
    return path


def _engine(ctx: multiprocessing.context.ForkServerContext, *argv: str) -> multiprocessing.process.BaseProcess:
    proc = ctx.Process(target=main, args=(list(argv),), daemon=True)
    proc.start()
    return proc


def _run_path(directory: Path) -> Path | None:
    for path in directory.glob("*.zarr"):
        try:
            attrs = json.loads((path / "zarr.json").read_text())["attributes"]["dualscope"]
        except (OSError, ValueError, KeyError):
            continue
        if "instrument_instance" in attrs:
            return path
    return None


def _rows(path: Path) -> dict[str, np.ndarray]:
    run = read_run(path)
    return {k: run.columns[k] for k in ("step", "candidate_index", "positions", "spectra")}


def test_killed_campaign_resumes_to_the_uninterrupted_run(tmp_path: Path) -> None:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["engine.cli.main"])
    reference_server, reference_endpoint = _serve()
    chain_server, chain_endpoint = _serve()
    rng = np.random.default_rng(7)
    try:
        reference = _engine(ctx, "run", str(_config(tmp_path / "reference", reference_endpoint)))
        chain_dir = tmp_path / "killed"
        first = _engine(ctx, "run", str(_config(chain_dir, chain_endpoint)))
        deadline = time.monotonic() + 60
        while (path := _run_path(chain_dir)) is None:
            assert time.monotonic() < deadline and first.is_alive(), "the campaign never created its run"
            time.sleep(0.01)
        proc, kills, started = first, 0, time.monotonic()
        while kills < KILLS:
            time.sleep(float(rng.uniform(0.0, 1.5)))
            if not proc.is_alive():
                break  # it finished before this kill: the campaign is complete
            proc.kill()
            proc.join()
            kills += 1
            proc = _engine(ctx, "resume", str(path))
        proc.join(120)
        reference.join(120)
        chain_s = time.monotonic() - started
        assert proc.exitcode == 0 and reference.exitcode == 0
    finally:
        for server in (reference_server, chain_server):
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=20)
    ref_path = _run_path(tmp_path / "reference")
    assert ref_path is not None
    killed, uninterrupted = _rows(path), _rows(ref_path)
    assert killed["step"].size == BUDGET == uninterrupted["step"].size
    for name in ("step", "candidate_index", "positions", "spectra"):
        np.testing.assert_array_equal(killed[name], uninterrupted[name], err_msg=name)
    run = read_run(path)
    assert run.attrs["status"] == "closed" and not run.attrs.get("repeats") and not run.attrs.get("missing")
    assert check_run(path)[1].ok
    said = [r.get("instrument_said") for r in run.attrs.get("resumes", [])]
    print(
        f"\n{kills} SIGKILLs survived in {chain_s:.1f} s: {len(run.attrs['recoveries'])} recoveries, "
        f"{sum(r['replayed_rows'] for r in run.attrs['recoveries'])} rows replayed from the journal; "
        f"in flight at a kill: {len(said) - said.count(None)} "
        f"(instrument had measured {said.count('done')}, was measuring {said.count('running')}, "
        f"never received {said.count('unknown')}); {BUDGET} spectra identical to the uninterrupted run"
    )
    if os.environ.get("DUALSCOPE_KEEP"):
        import shutil

        shutil.copytree(tmp_path, os.environ["DUALSCOPE_KEEP"], dirs_exist_ok=True)
    assert kills == KILLS, f"the campaign completed after {kills} kills; raise BUDGET"
