"""The pieces of ``dualscope resume``: policy state, asking the instrument by request id, repeats, refusals."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq

from engine.campaign import OperatorStop, reconcile
from engine.candidates import CandidateSet
from engine.cli.resuming import resume_run
from engine.cli.wiring import execute_run
from engine.clock import SystemClock
from engine.config import parse_config
from engine.decisions import Decision, Proposal
from engine.errors import ResumeError
from engine.policy import RandomPolicy, build_policy
from engine.protocols import Policy, Resumable
from engine.storage import RunWriter, read_run, recover_run
from engine.types import SpectralAxis
from instruments import messages
from instruments.client import ZmqInstrument
from instruments.local import LocalInstrument
from instruments.server import InstrumentServer
from instruments.wire import encode
from simulators.synthetic import SyntheticOptions, synthetic_microscope
from tests.conftest import CountingDriver
from tests.engine.storage.writer_child import abandon

AXIS = SpectralAxis("energy", "eV", 0.5, 0.05, 40)
CONFIG = """
[run]
name = "parts"
output_dir = "{out}"
seed = 5
chunk_rows = 3
figure = false
[instrument]
mode = "local"
[instrument.options]
image_pixels = 32
n_channels = {channels}
acquisition_time_s = 0.0
[candidates]
stride_px = 4
[policy]
name = "{policy}"
initial = 3
training = "inline"
[policy.scalariser]
kind = "band"
low = 1.0
high = 1.5
[stop]
budget = 12
"""


def _spectra(indices: np.ndarray) -> np.ndarray:
    """A smooth, deterministic property of the candidate index: a peak whose height varies."""
    e = AXIS.values()
    height = 1.0 + np.sin(0.37 * indices.astype(np.float64))
    return (height[:, None] * np.exp(-(((e[None, :] - 1.2) / 0.2) ** 2))).astype(np.float32)


def _grid() -> CandidateSet:
    yy, xx = np.meshgrid(np.arange(8.0), np.arange(8.0), indexing="ij")
    positions = np.stack([xx.ravel(), yy.ravel()], axis=1)
    return CandidateSet(positions, np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.int64), (8, 8))


def _policy(name: str, candidates: CandidateSet) -> Policy:
    config = parse_config(CONFIG.format(out="/nonexistent", channels=40, policy=name))
    return build_policy(config.policy, AXIS, np.random.default_rng(config.run.seed), candidates=candidates)


@pytest.mark.parametrize("name", ["random", "gp-position"])
def test_a_restored_policy_proposes_what_the_uninterrupted_one_did(name: str) -> None:
    candidates = _grid()
    policy = _policy(name, candidates)
    assert isinstance(policy, Resumable)
    chosen, states, told = [], [], []
    for _ in range(10):
        proposal = policy.propose(candidates, 1)
        states.append(policy.state())
        candidates.mark_measured(proposal.indices)
        spectra = _spectra(proposal.indices)
        policy.tell(proposal.indices, spectra)
        chosen.append(proposal.indices.tolist())
        told.append((proposal.indices, spectra))
    for crash in (0, 2, 3, 6):  # before, at and after the first model (initial = 3)
        again = _grid()
        restored = _policy(name, again)
        assert isinstance(restored, Resumable)
        for indices, _ in told[: crash + 1]:
            again.mark_measured(indices)
        restored.restore(states[crash], told[:crash])
        restored.tell(*told[crash])
        for step in range(crash + 1, 10):
            proposal = restored.propose(again, 1)
            assert proposal.indices.tolist() == chosen[step], f"crash after step {crash}, step {step}"
            again.mark_measured(proposal.indices)
            restored.tell(proposal.indices, _spectra(proposal.indices))


def test_a_state_that_does_not_fit_the_data_is_refused() -> None:
    candidates = _grid()
    policy = _policy("gp-position", candidates)
    assert isinstance(policy, Resumable)
    for _ in range(4):
        proposal = policy.propose(candidates, 1)
        candidates.mark_measured(proposal.indices)
        policy.tell(proposal.indices, _spectra(proposal.indices))
    state = policy.state()
    fresh = _policy("gp-position", _grid())
    assert isinstance(fresh, Resumable)
    with pytest.raises(ValueError, match="counts 4 measurements, the run has 0"):
        fresh.restore(state, [])
    with pytest.raises(ValueError, match="RNG state is for"):
        RandomPolicy(np.random.default_rng(0)).restore({"rng": {"bit_generator": "MT19937"}}, [])


@pytest.fixture
def served(counting: CountingDriver, zmq_context: zmq.Context[Any]) -> Iterator[InstrumentServer]:
    server = InstrumentServer(counting, zmq_context, SystemClock())
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop, 5), daemon=True)
    thread.start()
    yield server
    stop.set()
    thread.join(5)
    server.close()


def _decision(rid: str) -> Decision:
    return Decision(3, rid, "random", Proposal(np.array([0]), np.array([np.nan])), 0.0)


def test_the_instrument_says_what_it_did_with_a_request_id(
    served: InstrumentServer, counting: CountingDriver, zmq_context: zmq.Context[Any]
) -> None:
    position = np.array([[10.0, 10.0]])
    with ZmqInstrument(served.endpoint, zmq_context, timeout_s=5) as client:
        never = reconcile(client, _decision("never-sent"), served.instance)
        assert (never.state, never.repeat_note) == ("unknown", None)  # this instance never got it: measure now
        client.measure(position, request_id="sent")
        assert reconcile(client, _decision("sent"), served.instance).state == "done"
        restarted = reconcile(client, _decision("never-sent"), "an-instance-before-a-restart")
        assert restarted.state == "forgotten" and restarted.repeat_note and "restarted" in restarted.repeat_note
    assert counting.calls == 1


def test_a_resumed_engine_asking_for_a_running_request_gets_its_reply(
    served: InstrumentServer, counting: CountingDriver, zmq_context: zmq.Context[Any]
) -> None:
    counting.delay_s = 0.6  # the acquisition the killed engine started
    crashed = ZmqInstrument(served.endpoint, zmq_context, timeout_s=5)
    sent = messages.request("in-flight", "measure", None, {"positions": np.array([[10.0, 10.0]])})
    crashed._sock.send_multipart(encode(sent))  # the request went out ...
    with ZmqInstrument(served.endpoint, zmq_context, timeout_s=5, retries=0) as resumed:
        deadline = time.monotonic() + 5
        while resumed.recall("in-flight")["state"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.01)  # well under the server's rate limit
        crashed.close()  # ... and the engine died before the reply came
        assert reconcile(resumed, _decision("in-flight"), served.instance).state == "running"
        t0 = time.monotonic()
        measurement = resumed.measure(np.array([[10.0, 10.0]]), request_id="in-flight")
        waited = time.monotonic() - t0
    assert measurement.request_id == "in-flight" and counting.calls == 1
    assert waited < 2.0  # answered when the acquisition completed, not after the client's 5 s timeout


def _crash_during_measure(tmp_path: Path, config_text: str, after: int) -> Path:
    """Run a local campaign until measurement ``after`` dies mid-flight, leaving the run as a SIGKILL would."""
    config = parse_config(config_text)

    class Killed(BaseException):
        """The engine process died (nothing below it handles this)."""

    driver = CountingDriver(synthetic_microscope(SyntheticOptions(image_pixels=32, n_channels=40), SystemClock()))
    inst = LocalInstrument(driver)
    real_measure, calls = inst.measure, [0]

    def measure(positions: np.ndarray, request_id: str | None = None) -> Any:
        calls[0] += 1
        result = real_measure(positions, request_id)  # the dose was delivered ...
        if calls[0] > after:
            raise Killed  # ... and the engine died before recording it
        return result

    inst.measure = measure  # type: ignore[method-assign]
    close, release = RunWriter.close, RunWriter.release
    try:  # a SIGKILL runs no cleanup: nothing is flushed or closed, the process's descriptors go
        RunWriter.close = lambda self, outcome=None: abandon(self)  # type: ignore[method-assign,assignment]
        RunWriter.release = lambda self, status: abandon(self)  # type: ignore[method-assign,assignment]
        with pytest.raises(Killed):
            execute_run(config, config_text, inst, SystemClock(), OperatorStop())
    finally:
        RunWriter.close, RunWriter.release = close, release  # type: ignore[method-assign]
    (path,) = tmp_path.glob("*.zarr")
    return path


def test_resume_in_process_records_a_possible_repeat_and_completes(tmp_path: Path) -> None:
    text = CONFIG.format(out=tmp_path, channels=40, policy="gp-position")
    path = _crash_during_measure(tmp_path, text, after=5)
    report, writer = recover_run(path, SystemClock(), keep_open=True)
    assert writer is not None and report.in_flight and report.committed_after == 5
    # an in-process instrument restarts with the engine: it cannot say whether it measured the command
    inst = LocalInstrument(synthetic_microscope(SyntheticOptions(image_pixels=32, n_channels=40), SystemClock()))
    outcome = resume_run(writer, parse_config(text), inst, SystemClock(), OperatorStop())
    assert outcome.error is None and outcome.result is not None and outcome.result.n_recorded == 12
    run = read_run(path)
    (repeat,) = run.attrs["repeats"]
    assert repeat["request_id"] == report.in_flight[0] and "measured again" in repeat["note"]
    assert run.attrs["status"] == "closed" and run.attrs["in_flight"] is None
    assert run.attrs["resumes"][0]["instrument_said"] == ["forgotten"]
    steps = run.columns["step"]
    assert run.n == 12 and steps.tolist() == sorted(steps.tolist()) and len(set(run.columns["candidate_index"])) == 12


def test_resume_refuses_another_instrument_and_keeps_the_run(tmp_path: Path) -> None:
    text = CONFIG.format(out=tmp_path, channels=40, policy="random")
    path = _crash_during_measure(tmp_path, text, after=4)
    _, writer = recover_run(path, SystemClock(), keep_open=True)
    assert writer is not None
    other = LocalInstrument(synthetic_microscope(SyntheticOptions(image_pixels=32, n_channels=24), SystemClock()))
    with pytest.raises(ResumeError, match="does not describe itself as when the run started"):
        resume_run(writer, parse_config(text), other, SystemClock(), OperatorStop())
    writer.release(status="interrupted")
    run = read_run(path)
    assert run.n == 4 and run.attrs["status"] == "interrupted" and run.attrs["in_flight"] is not None


@pytest.mark.parametrize("policy", ["dualvae-bo", "dualvae-spectral"])
def test_a_resumed_dual_vae_continues_from_its_checkpoint_in_the_run(tmp_path: Path, policy: str) -> None:
    text = (
        CONFIG.format(out=tmp_path, channels=40, policy=policy)
        .replace('training = "inline"\n', 'training = "inline"\npretrain_steps = 20\nupdate_steps = 3\npatch_px = 8\n')
        .replace("budget = 12", "budget = 7")
    )
    path = _crash_during_measure(tmp_path, text, after=5)
    saved = sorted(p.name for p in (path / "checkpoints").iterdir())
    assert saved and all(name.startswith("features-v") for name in saved) and len(saved) <= 3
    (path / "checkpoints" / "features-v999999.partial").mkdir()  # a checkpoint the crash interrupted
    report, writer = recover_run(path, SystemClock(), keep_open=True)
    assert writer is not None and report.removed_partials == 1
    inst = LocalInstrument(synthetic_microscope(SyntheticOptions(image_pixels=32, n_channels=40), SystemClock()))
    outcome = resume_run(writer, parse_config(text), inst, SystemClock(), OperatorStop())
    assert outcome.error is None and outcome.result is not None and outcome.result.n_recorded == 7
    resumed = read_run(path).attrs["resumes"][0]
    assert resumed["features_checkpoint"] == int(saved[-1].removeprefix("features-v"))


def test_fetch_lost_steps_rebuilds_decisions_from_what_the_instrument_kept() -> None:
    """Untraced steps and the tail after the last known one; the drift shift is taken off; errors recorded."""
    from engine.campaign import LOST_POLICY, fetch_lost_steps, plan_resume
    from engine.errors import BadRequest, DeviceFault

    scope = LocalInstrument(synthetic_microscope(SyntheticOptions(image_pixels=16, n_channels=8), SystemClock()))
    desc = scope.describe()
    cands = CandidateSet.from_image_grid(scope.acquire_image("haadf"), desc, 4)
    shift = np.array([0.5, -0.25])
    for step, index in ((1, 3), (3, 5), (4, 6)):  # measured where the drift had moved the specimen
        scope.measure(cands.positions[[index]] + shift, request_id=f"run-{step:06d}")
    columns = {
        "step": np.array([0, 2]), "candidate_index": np.array([0, 1]),
        "spectra": np.zeros((2, 8), np.float32), "positions": cands.positions[[0, 1]],
    }  # fmt: skip
    plan = plan_resume({"missing": []}, columns)
    assert plan.untraced == (1,) and plan.next_step == 3
    track = [{"step": 1, "shift": shift.tolist()}]
    lost = fetch_lost_steps(scope, plan, "run", cands, track)
    assert [d.step for d in lost.measured] == [1, 3, 4] and not lost.failed and lost.note is None
    assert [int(d.proposal.indices[0]) for d in lost.measured] == [3, 5, 6]
    assert {d.policy for d in lost.measured} == {LOST_POLICY}

    class Failing(LocalInstrument):
        """Step 3 failed at the instrument; a server that knows no `fetch` says so for step 5."""

        def fetch(self, request_id: str) -> Any:
            if request_id == "run-000003":
                raise DeviceFault("detector saturated")
            if request_id == "run-000005":
                raise BadRequest("unknown command 'fetch'")
            return super().fetch(request_id)

    failing = Failing(synthetic_microscope(SyntheticOptions(image_pixels=16, n_channels=8), SystemClock()))
    failing.measure(cands.positions[[6]], request_id="run-000004")
    lost = fetch_lost_steps(failing, plan, "run", cands, [])
    assert [d.step for d, _ in lost.failed] == [3] and "saturated" in lost.failed[0][1]
    assert [d.step for d in lost.measured] == [4] and lost.note is not None and "cannot hand back" in lost.note
    far = LocalInstrument(synthetic_microscope(SyntheticOptions(image_pixels=16, n_channels=8), SystemClock()))
    far.measure(cands.positions[[2]] + 1.234, request_id="run-000003")  # no candidate there
    lost = fetch_lost_steps(far, plan, "run", cands, [])
    assert not lost.measured and lost.note is not None and "no candidate's position" in lost.note
