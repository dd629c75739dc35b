"""``dualscope resume``: SIGKILL a campaign at random moments, resume it each time, compare with an uninterrupted run.

Both campaigns talk to their own ``dualscope serve synthetic`` process with the same seed (an
instrument that outlives the engine, as a microscope does), so the same measurements in the same
order give the same spectra (see :func:`benchmarks.reliability.kill_and_resume`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from benchmarks.reliability import COLUMNS, KILL_BUDGET, kill_and_resume
from engine.storage import check_run, read_run

KILLS = int(os.environ.get("DUALSCOPE_KILLS", "50"))


@pytest.mark.parametrize("pipeline", [False, True], ids=["sequential", "pipelined"])
def test_killed_campaign_resumes_to_the_uninterrupted_run(tmp_path: Path, pipeline: bool) -> None:
    chain = kill_and_resume(KILLS, tmp_path, pipeline=pipeline)
    assert chain.kills == KILLS, f"the campaign completed after {chain.kills} kills; raise KILL_BUDGET"
    killed, uninterrupted = chain.rows(chain.killed_run), chain.rows(chain.reference_run)
    assert killed["step"].size == KILL_BUDGET == uninterrupted["step"].size
    for name in COLUMNS:
        np.testing.assert_array_equal(killed[name], uninterrupted[name], err_msg=name)
    run = read_run(chain.killed_run)
    assert run.attrs["status"] == "closed" and not run.attrs.get("repeats") and not run.attrs.get("missing")
    assert check_run(chain.killed_run)[1].ok
    said = [state for r in run.attrs.get("resumes", []) for state in r.get("instrument_said", [])]
    assert said.count("done") + said.count("running") + said.count("unknown") == len(said)
    print(
        f"\n{'pipelined' if pipeline else 'sequential'}: {chain.kills} SIGKILLs survived in {chain.seconds:.1f} s: "
        f"{len(run.attrs['recoveries'])} recoveries, "
        f"{sum(r['replayed_rows'] for r in run.attrs['recoveries'])} rows replayed from the journal; "
        f"in flight at a kill: {len(said)} "
        f"(instrument had measured {said.count('done')}, was measuring {said.count('running')}, "
        f"never received {said.count('unknown')}); {KILL_BUDGET} spectra identical to the uninterrupted run"
    )
