"""Safety limits: soft limits, largest step, forbidden regions and dose budget, in the engine's loop."""

from __future__ import annotations

import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from engine.campaign import Budget, Campaign
from engine.candidates import CandidateSet
from engine.clock import SystemClock
from engine.config import parse_config
from engine.errors import ConfigError, OutOfLimits
from engine.policy import RandomPolicy, RasterPolicy
from engine.safety import DoseBudget, Polygon, SafetyLimits
from instruments.client import ZmqInstrument
from instruments.local import LocalInstrument
from instruments.server import InstrumentServer
from tests.conftest import CountingDriver, FakeClock
from tests.engine.cli.test_cli import DUALSCOPE, ROOT, _cli
from tests.fakes import MemoryRecorder

SQUARE = Polygon(np.array([[40.0, 40.0], [60.0, 40.0], [60.0, 60.0], [40.0, 60.0]]))


def test_polygon_membership() -> None:
    points = np.array([[50.0, 50.0], [10.0, 50.0], [59.9, 40.1], [61.0, 50.0]])
    assert SQUARE.contains(points).tolist() == [True, False, True, False]
    l_shape = Polygon(np.array([[0, 0], [2, 0], [2, 1], [1, 1], [1, 2], [0, 2]], dtype=float))
    assert l_shape.contains(np.array([[0.5, 1.5], [1.5, 1.5], [1.5, 0.5]])).tolist() == [True, False, True]
    with pytest.raises(ValueError, match="at least 3"):
        Polygon(np.array([[0.0, 0.0], [1.0, 1.0]]))


def test_each_limit_names_itself() -> None:
    limits = SafetyLimits(("x", "y"), soft_limits={"x": (0.0, 90.0)}, max_step=30.0, forbidden=[SQUARE])
    assert limits.check(np.array([[95.0, 10.0]])) == "x = 95 lies outside the soft limits [0, 90]"
    assert limits.check(np.array([[10.0, 10.0], [10.0, 50.0]])) == "a step of 40 exceeds the largest allowed step 30"
    assert limits.check(np.array([[50.0, 45.0]])) == "(50, 45) lies in forbidden region 1"
    assert limits.check(np.array([[10.0, 10.0]])) is None
    limits.commit(np.array([[10.0, 10.0]]))
    assert "step of 50" in (limits.check(np.array([[60.0, 10.0]])) or "")  # from where the probe now is
    with pytest.raises(ValueError, match="unknown axes \\['z'\\]"):
        SafetyLimits(("x", "y"), soft_limits={"z": (0.0, 1.0)})


def test_the_dose_budget_accumulates_where_the_beam_dwells() -> None:
    dose = DoseBudget(budget_e_per_nm2=100.0, electrons_per_measurement=100 * np.pi, probe_radius_nm=1.0)
    assert dose.per_dwell_e_per_nm2 == pytest.approx(100.0)  # one dwell is the whole budget
    limits = SafetyLimits(("x", "y"), dose=dose)
    assert limits.check(np.array([[5.0, 5.0]])) is None
    limits.commit(np.array([[5.0, 5.0]]))
    assert dose.peak_dose() == pytest.approx(100.0)
    assert "would bring the dose there to 200 e/nm², over the budget of 100" in (
        limits.check(np.array([[5.2, 5.1]])) or ""
    )
    assert limits.check(np.array([[9.0, 5.0]])) is None  # 4 nm away: a fresh area
    assert limits.check(np.array([[9.0, 5.0], [9.1, 5.0]])) is not None  # the batch itself overdoses


def _campaign(driver: CountingDriver, limits: SafetyLimits, policy: object, budget: int, **kw: object) -> Campaign:
    inst = LocalInstrument(driver)
    cands = CandidateSet.from_image_grid(inst.acquire_image("haadf"), inst.describe(), 4, margin_px=1)
    return Campaign(
        instrument=inst, policy=policy, recorder=kw.pop("recorder"), candidates=cands,  # type: ignore[arg-type]
        spectral_axis=inst.describe().spectral_axis, stop_rules=[Budget(budget)], clock=FakeClock(),
        request_prefix="safe", safety=limits, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_refused_points_are_recorded_with_their_reason_and_never_sent(counting: CountingDriver) -> None:
    desc = counting.describe()
    x_axis = [a.name for a in desc.axes].index("x")
    low, high = desc.axes[x_axis].low, desc.axes[x_axis].high
    mid = (low + high) / 2
    region = Polygon(np.array([[mid, -1e9], [1e9, -1e9], [1e9, 1e9], [mid, 1e9]]))  # the right half
    limits = SafetyLimits([a.name for a in desc.axes], forbidden=[region])
    rec = MemoryRecorder()
    result = _campaign(counting, limits, RandomPolicy(np.random.default_rng(0)), 15, recorder=rec).run()
    measured = np.concatenate([m.positions for _, m, _ in rec.rows])
    assert result.n_recorded == 15 and (measured[:, x_axis] < mid).all()
    assert result.refused == len(rec.missing) > 0 and counting.calls == 15
    assert all(r.startswith("refused by the safety limits: (") and "forbidden region 1" in r for _, r in rec.missing)


def test_a_policy_that_keeps_proposing_refused_points_is_stopped(counting: CountingDriver) -> None:
    desc = counting.describe()
    limits = SafetyLimits([a.name for a in desc.axes], soft_limits={"y": (desc.axes[1].high - 1e-6, desc.axes[1].high)})
    rec = MemoryRecorder()
    result = _campaign(counting, limits, RasterPolicy(), 10, recorder=rec, max_refusals=5).run()
    assert result.n_recorded == 0 and counting.calls == 0 and result.refused == 5
    assert result.stop_reason.startswith("stopped: the policy proposed 5 refused points in a row (last: y = ")


def test_the_server_enforces_the_limits_again_before_the_driver_sees_them(
    counting: CountingDriver, zmq_context: zmq.Context[Any]
) -> None:
    desc = counting.describe()
    names = [a.name for a in desc.axes]
    lows, highs = np.array([a.low for a in desc.axes]), np.array([a.high for a in desc.axes])
    centre = (lows + highs) / 2
    dose = DoseBudget(budget_e_per_nm2=150.0, electrons_per_measurement=100 * np.pi, probe_radius_nm=1.0)
    region = Polygon(np.array([[lows[0], lows[1]], [centre[0], lows[1]], [centre[0], centre[1]], [lows[0], centre[1]]]))
    limits = SafetyLimits(names, forbidden=[region], dose=dose)
    server = InstrumentServer(counting, zmq_context, SystemClock(), safety=limits)
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop, 5), daemon=True)
    thread.start()
    try:
        with ZmqInstrument(server.endpoint, zmq_context, timeout_s=5) as client:
            inside = (lows + centre) / 2
            with pytest.raises(OutOfLimits, match=r"refused by the server's safety limits: .* forbidden region 1"):
                client.measure(inside[None, :])
            spot = (centre + highs) / 2
            assert client.measure(spot[None, :]).spectra.shape[0] == 1  # 100 e/nm² of 150
            with pytest.raises(OutOfLimits, match="would bring the dose there to 200 e/nm², over the budget of 150"):
                client.measure(spot[None, :])
        assert counting.calls == 1  # the driver saw only the allowed dwell
    finally:
        stop.set()
        thread.join(timeout=5)
        server.close()


def test_the_safety_section_of_a_config_builds_the_limits_or_names_the_problem() -> None:
    text = """
[safety]
soft_limits = { x = [0.0, 50.0] }
max_step = 20.0
forbidden = [[[0.0, 0.0], [10.0, 0.0], [10.0, 10.0]]]
dose_budget_e_per_nm2 = 1000.0
electrons_per_measurement = 50.0
"""
    limits = parse_config(text, "run.toml").safety.limits(["x", "y"])
    assert limits is not None and limits.max_step == 20.0 and len(limits.forbidden) == 1 and limits.dose is not None
    assert parse_config("", "run.toml").safety.limits(["x", "y"]) is None
    with pytest.raises(ConfigError, match=r"safety\.max_stp: unknown key"):
        parse_config("[safety]\nmax_stp = 3", "run.toml")
    with pytest.raises(ConfigError, match="go together"):
        parse_config("[safety]\ndose_budget_e_per_nm2 = 3", "run.toml").safety.limits(["x", "y"])
    with pytest.raises(ConfigError, match="\\[safety\\]: soft limits for unknown axes \\['z'\\]"):
        parse_config("[safety]\nsoft_limits = { z = [0.0, 1.0] }", "run.toml").safety.limits(["x", "y"])


def test_serve_reads_the_safety_table_of_a_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[safety]\nsoft_limits = { q = [0.0, 1.0] }\n")
    refused = _cli("serve", "synthetic", "--safety", str(bad))
    assert refused.returncode == 2 and "[safety]: soft limits for unknown axes ['q']" in refused.stderr
    good = tmp_path / "run.toml"
    good.write_text('[run]\nname = "x"\n\n[safety]\nforbidden = [[[0.0, 0.0], [30.0, 0.0], [30.0, 30.0]]]\n')
    proc = subprocess.Popen([*DUALSCOPE, "serve", "synthetic", "--safety", str(good)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    ctx: zmq.Context[Any] = zmq.Context()
    try:
        assert proc.stdout is not None
        with ZmqInstrument(proc.stdout.readline().split()[1], ctx, timeout_s=10) as client:
            names = [a.name for a in client.describe().axes]
            corner = np.array([[20.0 if n == "x" else 5.0 for n in names]])
            with pytest.raises(OutOfLimits, match="forbidden region 1"):
                client.measure(corner)
            endpoint = client.endpoint
            # an operator changes the limits while the server runs: `dualscope limits`
            cleared = _cli("limits", endpoint, "--clear")
            assert cleared.returncode == 0 and "Limits now in force" in cleared.stdout and "none" in cleared.stdout
            client.measure(corner)  # e/nm² so far at the corner: 50 / (π 1²) ≈ 15.9
            dosed = tmp_path / "dose.toml"
            dosed.write_text("[safety]\ndose_budget_e_per_nm2 = 40.0\nelectrons_per_measurement = 50.0\n")
            budget = _cli("limits", endpoint, str(dosed))
            assert budget.returncode == 0 and "Peak dose so far: 15.9 e/nm²" in budget.stdout, budget.stdout
            client.measure(corner)  # 31.8: within 40
            with pytest.raises(OutOfLimits, match="over the budget of 40"):
                client.measure(corner)  # the dwell before the new budget counts against it
            bad = _cli("limits", endpoint, str(tmp_path / "bad.toml"))
            assert bad.returncode == 2 and "unknown axes ['q']" in bad.stderr
            assert _cli("limits", endpoint).returncode == 2  # neither a file nor --clear
    finally:
        ctx.destroy(linger=0)
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)  # waits for it and closes its pipes
        proc.communicate(timeout=20)
