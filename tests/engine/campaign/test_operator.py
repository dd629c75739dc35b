"""The operator: pause, resume, stop and inject on a running campaign, over its control socket, all recorded."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from engine.campaign import Budget, Campaign, CampaignResult, OperatorAction, OperatorControl
from engine.candidates import CandidateSet
from engine.clock import SystemClock
from engine.decisions import PropertyMap
from engine.errors import BadRequest, InstrumentTimeout, OutOfLimits, Unauthorised
from engine.policy import RandomPolicy
from engine.report import run_property
from engine.storage import read_run
from instruments.auth import AuthorisedKeys, ClientAuth, KeyPair, ServerAuth
from instruments.control import ControlServer, fetch_property_map, send_control
from instruments.local import LocalInstrument
from tests.conftest import CountingDriver
from tests.engine.cli.test_cli import _cli, _running, _wait, _write_config
from tests.fakes import MemoryRecorder


def _start(
    driver: CountingDriver, control: OperatorControl, context: zmq.Context[Any], budget: int, pipeline: bool = False
) -> tuple[ControlServer, CandidateSet, MemoryRecorder, list[CampaignResult], threading.Thread]:
    """A campaign under ``control`` running in a thread, with its control socket."""
    inst = LocalInstrument(driver)
    desc = inst.describe()
    cands = CandidateSet.from_image_grid(inst.acquire_image("haadf"), desc, 4, margin_px=1)
    rec, results = MemoryRecorder(), list[CampaignResult]()
    campaign = Campaign(
        instrument=inst, policy=RandomPolicy(np.random.default_rng(0)), recorder=rec, candidates=cands,
        spectral_axis=desc.spectral_axis, stop_rules=[Budget(budget), control.stop_rule], clock=SystemClock(),
        request_prefix="op", operator=control, pipeline=pipeline,
    )  # fmt: skip
    thread = threading.Thread(target=lambda: results.append(campaign.run()), daemon=True)
    thread.start()
    return ControlServer(control, desc, context), cands, rec, results, thread


@pytest.mark.parametrize("pipeline", [False, True], ids=["sequential", "pipelined"])
def test_pause_inject_resume_stop_over_the_control_socket(
    counting: CountingDriver, zmq_context: zmq.Context[Any], pipeline: bool
) -> None:
    counting.delay_s = 0.02
    actions: list[OperatorAction] = []
    control = OperatorControl(SystemClock(), actions.append)
    server, cands, rec, results, thread = _start(counting, control, zmq_context, 10_000, pipeline)
    try:
        _wait(lambda: len(rec.rows) >= 3)
        status = send_control(server.endpoint, "pause", "alice", zmq_context)
        assert status["paused"] is True
        _wait(lambda: send_control(server.endpoint, "status", "alice", zmq_context)["holding"], 120)
        held = len(rec.rows)  # the pause has taken effect: the measurement in flight, if any, is recorded
        time.sleep(0.3)
        assert len(rec.rows) == held, "a paused campaign measures nothing"
        target = cands.positions[cands.available()[7]] + 0.1
        queued = send_control(server.endpoint, "inject", "alice", zmq_context, position=target.tolist())
        assert queued["injected_queued"] == 1
        with pytest.raises(BadRequest, match=r"inject needs a position: 2 numbers \(x, y\)"):
            send_control(server.endpoint, "inject", "alice", zmq_context, position=[1.0])
        with pytest.raises(OutOfLimits):
            send_control(server.endpoint, "inject", "alice", zmq_context, position=[1e9, 0.0])
        with pytest.raises(BadRequest, match="names its operator"):
            send_control(server.endpoint, "status", "", zmq_context)
        send_control(server.endpoint, "resume", "bob", zmq_context)
        _wait(lambda: len(rec.rows) > held + 2)
        injected = rec.rows[held]
        assert injected[0].policy == "operator:alice"
        np.testing.assert_allclose(injected[1].positions[0], target - 0.1)
        assert send_control(server.endpoint, "stop", "carol", zmq_context)["stopping"] is True
        thread.join(timeout=10)
    finally:
        control.stop("test teardown")
        thread.join(timeout=10)
        server.close()
    assert results and results[0].stop_reason == "stopped by the operator"
    assert [(a.action, a.who) for a in actions[:4]] == [
        ("pause", "alice"), ("inject", "alice"), ("resume", "bob"), ("stop", "carol"),
    ]  # fmt: skip


def test_a_paused_campaign_stops_when_asked(counting: CountingDriver) -> None:
    inst = LocalInstrument(counting)
    cands = CandidateSet.from_image_grid(inst.acquire_image("haadf"), inst.describe(), 4, margin_px=1)
    control = OperatorControl(SystemClock())
    control.pause("alice")
    campaign = Campaign(
        instrument=inst, policy=RandomPolicy(np.random.default_rng(0)), recorder=MemoryRecorder(), candidates=cands,
        spectral_axis=inst.describe().spectral_axis, stop_rules=[Budget(5), control.stop_rule], clock=SystemClock(),
        request_prefix="op", operator=control,
    )  # fmt: skip
    threading.Timer(0.3, control.stop, args=("bob",)).start()
    result = campaign.run()
    assert result.n_recorded == 0 and result.stop_reason == "stopped by the operator"


def test_dualscope_ctl_commands_a_running_campaign_and_the_run_records_who(tmp_path: Path) -> None:
    with _running(_write_config(tmp_path)) as (proc, run_path):
        paused = _cli("ctl", str(run_path), "pause", "--as", "alice")
        assert paused.returncode == 0 and re.search(r"pause: campaign paus(ed|ing after the current)", paused.stdout)
        bad = _cli("ctl", str(run_path), "inject", "--as", "alice")
        assert bad.returncode == 2 and "inject and edit need a position" in bad.stderr
        one = _cli("ctl", str(run_path), "inject", "50", "--as", "alice")
        assert one.returncode == 2 and "inject needs 2 numbers, one per axis (x in nm, y in nm); got 1" in one.stderr
        assert "body." not in one.stderr
        assert _cli("ctl", str(run_path), "inject", "10", "12", "--as", "alice").returncode == 0
        assert _cli("ctl", str(run_path), "resume", "--as", "bob").returncode == 0
        stopped = _cli("ctl", str(run_path), "stop", "--as", "bob")
        assert stopped.returncode == 0 and "campaign stopping" in stopped.stdout
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped by the operator" in out, out + err
    run = read_run(run_path)
    actions = [(a["action"], a["who"]) for a in run.attrs["operator_actions"]]
    assert actions == [("pause", "alice"), ("inject", "alice"), ("resume", "bob"), ("stop", "bob")]
    assert run.attrs["operator_actions"][1]["position"] == [10.0, 12.0]
    ended = _cli("ctl", str(run_path), "status")  # answered from the run at once: no socket to wait for
    assert ended.returncode == 0 and "no campaign running" in ended.stdout and "status 'closed'" in ended.stdout
    assert "stopped by the operator" in ended.stdout
    late = _cli("ctl", str(run_path), "pause", "--as", "alice")
    assert late.returncode == 2 and "no campaign is running" in late.stderr


def test_approval_mode_approve_veto_edit_and_the_timeout_fallback(
    counting: CountingDriver, zmq_context: zmq.Context[Any]
) -> None:
    actions: list[OperatorAction] = []
    control = OperatorControl(SystemClock(), actions.append, approval_timeout_s=1.5, on_timeout="veto")
    server, cands, rec, results, thread = _start(counting, control, zmq_context, 3)

    def awaiting() -> list[float] | None:
        return send_control(server.endpoint, "status", "t", zmq_context)["awaiting_approval"]  # type: ignore[no-any-return]

    try:
        _wait(lambda: awaiting() is not None)
        first = awaiting()
        send_control(server.endpoint, "approve", "alice", zmq_context)
        _wait(lambda: len(rec.rows) == 1)
        np.testing.assert_allclose(rec.rows[0][1].positions, first)
        _wait(lambda: awaiting() is not None)
        send_control(server.endpoint, "veto", "bob", zmq_context)
        _wait(lambda: awaiting() is not None and len(rec.missing) == 1)
        edit_to = cands.positions[cands.available()[0]]
        send_control(server.endpoint, "edit", "carol", zmq_context, position=edit_to.tolist())
        _wait(lambda: len(rec.rows) == 2)  # the edited point is measured without asking again
        np.testing.assert_allclose(rec.rows[1][1].positions[0], edit_to)
        assert rec.rows[1][0].policy == "operator:carol"
        _wait(lambda: len(rec.missing) == 3, 5)  # nobody answers: vetoed after 1.5 s
        with pytest.raises(BadRequest, match=r"edit needs a position: 2 numbers"):
            send_control(server.endpoint, "edit", "dave", zmq_context, position=None)
        send_control(server.endpoint, "approve", "alice", zmq_context)
        thread.join(timeout=10)
    finally:
        control.stop("teardown")
        thread.join(timeout=10)
        server.close()
    reasons = [r for _, r in rec.missing]
    assert reasons[0] == "vetoed by bob" and reasons[1].startswith("edited by carol: measuring [")
    assert reasons[2] == "vetoed by timeout (veto)"
    assert results[0].n_recorded == 3
    assert [a.action for a in actions][:4] == ["approve", "veto", "edit", "inject"]
    assert "timeout-veto" in [a.action for a in actions]


def test_a_control_socket_with_keys_admits_listed_operators_and_records_the_key_name(
    counting: CountingDriver, zmq_context: zmq.Context[Any]
) -> None:
    roles = [("ann", "operator"), ("obs", "observer"), ("bot", "agent")]
    pairs = {name: KeyPair.new(name, role) for name, role in roles}
    campaign_key = KeyPair.new("campaign", "operator")
    auth = ServerAuth(campaign_key, AuthorisedKeys.parse(p.authorised_line() for p in pairs.values()))
    actions: list[OperatorAction] = []
    control = OperatorControl(SystemClock(), actions.append)
    inst = LocalInstrument(counting)
    server = ControlServer(control, inst.describe(), zmq_context, "tcp://127.0.0.1:*", auth)

    def as_key(name: str) -> ClientAuth:
        return ClientAuth(pairs[name], campaign_key.public)

    try:
        # status is for any listed role; the key's name is recorded whatever body.who claims
        assert send_control(server.endpoint, "status", "x", zmq_context, auth=as_key("obs"))["paused"] is False
        with pytest.raises(Unauthorised, match=r"'obs' \(role observer\) may not send 'pause'"):
            send_control(server.endpoint, "pause", "obs", zmq_context, auth=as_key("obs"))
        with pytest.raises(Unauthorised, match="needs the operator role"):
            send_control(server.endpoint, "stop", "bot", zmq_context, auth=as_key("bot"))
        assert send_control(server.endpoint, "pause", "mallory", zmq_context, auth=as_key("ann"))["paused"] is True
        stranger = ClientAuth(KeyPair.new("eve", "operator"), campaign_key.public)
        with pytest.raises(InstrumentTimeout):  # an unknown key gets no connection at all
            send_control(server.endpoint, "resume", "eve", zmq_context, auth=stranger, timeout_s=0.5)
        with pytest.raises(InstrumentTimeout):  # nor does a client without keys
            send_control(server.endpoint, "resume", "anon", zmq_context, timeout_s=0.5)
    finally:
        server.close()
    assert [(a.action, a.who) for a in actions] == [("pause", "ann")]
    assert len(server.unauthorised) == 2


def test_dualscope_ctl_with_keys_records_the_key_name(tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    KeyPair.new("campaign", "operator").save(keys)  # the campaign's own pair (its public key goes in the run)
    ann = KeyPair.new("ann", "operator")
    ann.save(keys)
    (keys / "operators").write_text(ann.authorised_line() + "\n")
    cfg = _write_config(tmp_path)
    cfg.write_text(
        cfg.read_text()
        + f'[operator]\nauthorised_keys = "{keys / "operators"}"\nkey = "{keys / "campaign.key_secret"}"\n'
    )
    secret = str(keys / "ann.key_secret")
    with _running(cfg, "--key", secret) as (proc, run_path):
        keyless = _cli("ctl", str(run_path), "stop", "--as", "mallory")
        assert keyless.returncode == 2 and "requires a key: add --key" in keyless.stderr
        assert _cli("ctl", str(run_path), "stop", "--key", secret, "--as", "mallory").returncode == 0
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0 and "stopped by the operator" in out, out + err
    actions = [(a["action"], a["who"]) for a in read_run(run_path).attrs["operator_actions"]]
    assert actions == [("stop", "ann")]


def test_dualscope_ctl_target_changes_what_a_running_campaign_maximises(tmp_path: Path) -> None:
    """`ctl target` on a gp-position campaign: refused when bad, recorded with who and when, in the policy's state."""
    policy = (
        'name = "gp-position"\ntraining = "inline"\ninitial = 3\nscalariser = { kind = "band", low = 1.0, high = 2.0 }'
    )
    with _running(_write_config(tmp_path, policy)) as (proc, run_path):
        _wait(lambda: re.search(r"([5-9]|\d\d+) spectra recorded", _cli("ctl", str(run_path), "status").stdout), 120)
        neither = _cli("ctl", str(run_path), "target", "--as", "alice")
        assert neither.returncode == 2 and "target needs --band LOW:HIGH or --scalariser" in neither.stderr
        off_axis = _cli("ctl", str(run_path), "target", "--band", "10:20", "--as", "alice")
        assert off_axis.returncode == 2 and "holds no channel of the axis [0.5" in off_axis.stderr, off_axis.stderr
        unknown = _cli("ctl", str(run_path), "target", "--scalariser", 'kind = "band", lo = 1', "--as", "alice")
        assert unknown.returncode == 2 and "lo: unknown key; allowed here" in unknown.stderr, unknown.stderr
        changed = _cli("ctl", str(run_path), "target", "--scalariser", 'kind = "peak", low = 2.5, high = 4.0',
                       "--as", "alice")  # fmt: skip
        assert changed.returncode == 0 and "target: campaign running" in changed.stdout, changed.stdout + changed.stderr
        n_then = read_run(run_path).committed
        _wait(lambda: read_run(run_path).committed >= n_then + 12, 120)
        assert _cli("ctl", str(run_path), "stop", "--as", "bob").returncode == 0
        out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err
    run = read_run(run_path)
    actions = run.attrs["operator_actions"]
    assert [(a["action"], a["who"]) for a in actions] == [("target", "alice"), ("stop", "bob")]
    assert actions[0]["scalariser"] == {"kind": "peak", "low": 2.5, "high": 4.0} and actions[0]["time"] > 0
    state = run.attrs["resume_point"]["policy_state"]  # what `dualscope resume` would restore
    assert state["target"]["kind"] == "peak" and state["target"]["low"] == 2.5
    _, mapped = run_property(run)  # the report maps the target the campaign ended with, and says whose it is
    assert mapped == "peak position over 2.5–4 eV (eV, the target alice set during the run)", mapped


class _MappingPolicy(RandomPolicy):
    """Random choices, and a map whose version counts the times the campaign asked for it."""

    def __init__(self, m: int):
        super().__init__(np.random.default_rng(0))
        self.asked, self.m = 0, m

    def property_map(self) -> PropertyMap:
        self.asked += 1
        return PropertyMap(self.asked, self.asked, np.arange(self.m, dtype=np.float64), np.ones(self.m))


def test_the_live_views_map_is_copied_only_when_asked_and_roles_are_in_every_reply(
    counting: CountingDriver, zmq_context: zmq.Context[Any]
) -> None:
    """`model` over a keyed control socket: any role reads the map; each reply says the sender's role."""
    counting.delay_s = 0.01
    pairs = {name: KeyPair.new(name, role) for name, role in [("ann", "operator"), ("obs", "observer")]}
    campaign_key = KeyPair.new("campaign", "operator")
    auth = ServerAuth(campaign_key, AuthorisedKeys.parse(p.authorised_line() for p in pairs.values()))
    control = OperatorControl(SystemClock())
    inst = LocalInstrument(counting)
    desc = inst.describe()
    cands = CandidateSet.from_image_grid(inst.acquire_image("haadf"), desc, 4, margin_px=1)
    policy, rec = _MappingPolicy(cands.positions.shape[0]), MemoryRecorder()
    campaign = Campaign(
        instrument=inst, policy=policy, recorder=rec, candidates=cands, spectral_axis=desc.spectral_axis,
        stop_rules=[Budget(10_000), control.stop_rule], clock=SystemClock(), request_prefix="op", operator=control,
    )  # fmt: skip
    thread = threading.Thread(target=campaign.run, daemon=True)
    thread.start()
    server = ControlServer(control, desc, zmq_context, "tcp://127.0.0.1:*", auth)

    def as_key(name: str) -> ClientAuth:
        return ClientAuth(pairs[name], campaign_key.public)

    try:
        _wait(lambda: len(rec.rows) >= 5)
        assert policy.asked == 0  # nobody looked: the campaign never copied the map
        first, role = fetch_property_map(server.endpoint, "x", zmq_context, auth=as_key("obs"))
        assert first is None and role == "observer"  # asking makes the next decision publish it
        _wait(lambda: fetch_property_map(server.endpoint, "x", zmq_context, auth=as_key("obs"))[0] is not None)
        found, role = fetch_property_map(server.endpoint, "x", zmq_context, auth=as_key("ann"))
        assert role == "operator" and found is not None and found.version >= 1
        np.testing.assert_array_equal(found.mean, np.arange(cands.positions.shape[0]))
        assert found.std.shape == (cands.positions.shape[0],)
        asked, rows = policy.asked, len(rec.rows)
        _wait(lambda: len(rec.rows) >= rows + 5)  # five decisions on which no one asked
        assert policy.asked <= asked + 1  # only the one after the last ask published
        assert send_control(server.endpoint, "status", "x", zmq_context, auth=as_key("obs"))["role"] == "observer"
        assert send_control(server.endpoint, "stop", "x", zmq_context, auth=as_key("ann"))["role"] == "operator"
        thread.join(timeout=30)
    finally:
        control.stop("test teardown")
        thread.join(timeout=10)
        server.close()
