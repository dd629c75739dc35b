"""Builds the concrete instrument, policy, recorder and campaign from a ``RunConfig``."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from engine.campaign import (
    Budget,
    Campaign,
    CampaignResult,
    DriftTracker,
    OperatorControl,
    OperatorStop,
    StepReport,
    WallTime,
)
from engine.candidates import CandidateSet
from engine.cli.drivers import build_driver, driver_options
from engine.cli.spawn import spawned_server
from engine.config import InstrumentSection, RunConfig
from engine.decisions import Decision
from engine.errors import ConfigError, Stopped
from engine.io import save_feature_checkpoint
from engine.policy import (
    BOPolicy,
    PythonParts,
    Snapshot,
    Trainer,
    build_policy,
    check_policy_inputs,
    make_trainer,
)
from engine.protocols import Clock, Instrument, PhaseProgress, Policy
from engine.storage import RunWriter, new_run_path
from engine.types import Image, InstrumentDescription
from instruments.auth import ClientAuth, ServerAuth
from instruments.client import ZmqInstrument
from instruments.control import ControlServer
from instruments.local import LocalInstrument


@contextmanager
def open_instrument(
    section: InstrumentSection, context: zmq.Context[Any], clock: Clock, queue: bool = False
) -> Iterator[Instrument]:
    """Yield the instrument the config names (spawned server, running server or in-process), then release it.

    ``queue`` (a pipelined run): a client over ZeroMQ asks the server to queue each measurement behind
    the running one.
    """
    if section.mode == "local":
        yield LocalInstrument(build_driver(section.driver, section.options, clock))
        return
    if section.mode == "connect":
        if not section.endpoint:
            raise ConfigError("instrument.endpoint is required when instrument.mode = 'connect'")
        with _client(section.endpoint, section, context, queue) as client:
            yield client
        return
    options = driver_options(section.driver, section.options)  # fail here, not in the child
    with (
        spawned_server(section.driver, options.model_dump(mode="json")) as endpoint,
        _client(endpoint, section, context, queue) as client,
    ):
        yield client


@contextmanager
def checked_instrument(config: RunConfig, context: zmq.Context[Any], clock: Clock) -> Iterator[Instrument]:
    """The output directory and the driver's image channel checked first, then ``open_instrument``."""
    from engine.cli.drivers import check_image_channel
    from engine.storage import ensure_output_dir

    ensure_output_dir(config.run.output_dir)  # before anything is started
    section = config.instrument
    if section.mode in ("spawn", "local"):
        check_image_channel(section.driver, section.options, section.image_channel)
    with open_instrument(section, context, clock, queue=config.pipelined) as instrument:
        yield instrument


@contextmanager
def _client(
    endpoint: str, section: InstrumentSection, context: zmq.Context[Any], queue: bool = False
) -> Iterator[ZmqInstrument]:
    auth = ClientAuth.from_files(
        section.client_key, section.server_key, "instrument.client_key and instrument.server_key"
    )
    client = ZmqInstrument(
        endpoint, context, timeout_s=section.timeout_s, retries=section.retries, auth=auth, queue=queue
    )
    try:
        client.hello()
        yield client
    finally:
        client.close()


@dataclass(frozen=True)
class RunOutcome:
    """What a finished (or failed) run left behind."""

    run_path: Path
    result: CampaignResult | None
    error: BaseException | None


def execute_run(
    config: RunConfig,
    config_text: str,
    instrument: Instrument,
    clock: Clock,
    operator_stop: OperatorStop,
    on_step: Callable[[StepReport], None] | None = None,
    candidates: CandidateSet | None = None,
    context: zmq.Context[Any] | None = None,
    on_phase: PhaseProgress | None = None,
    python: PythonParts | None = None,
    on_open: Callable[[Path], None] | None = None,
) -> RunOutcome:
    """Acquire the structural image, create the run, build the policy, run the campaign and close the run.

    ``python``: an acquisition factory and/or scalariser function from Python (``engine.Experiment``),
    recorded by name in the run's ``python_parts`` (``dualscope resume`` cannot rebuild them, and says so).

    With a ZeroMQ ``context`` the campaign takes operator commands on a loopback control socket
    (its endpoint is stored in the run for `dualscope ctl`), and records each action in the run.
    The run and its control socket exist before the policy's start-up (the dual VAE's pre-training,
    reported through ``on_phase``), so `dualscope ctl RUN stop` and Ctrl-C reach that too.

    The run is closed (consistent, with its outcome) whatever happens; an error
    is returned in the outcome, not raised, so the caller can report both. ``candidates``
    defaults to a grid over the structural image (replays pass the recorded positions).
    ``on_open`` is called with the run's path once it and its control socket exist (``--view``).
    """
    description = instrument.describe()
    channel = config.instrument.image_channel
    if channel not in description.image_channels:
        raise ConfigError(
            f"instrument.image_channel = {channel!r}, but {description.name!r} acquires "
            f"{', '.join(map(repr, description.image_channels)) or 'no structural images'}"
        )
    image = instrument.acquire_image(channel)
    if candidates is None:
        candidates = CandidateSet.from_image_grid(
            image, description, config.candidates.stride_px, config.candidates.margin_px
        )
    notes = [str(n) for n in description.extra.get("notes", [])]
    # a policy that cannot work fails first (no image, a scalariser window off the axis)
    check_policy_inputs(config.policy, image, candidates, notes, description.spectral_axis)
    path = new_run_path(config.run.output_dir, config.run.name, clock)
    writer = RunWriter.create(
        path,
        description=description,
        images=[image],
        candidates=candidates,
        config_toml=config_text,
        clock=clock,
        chunk_rows=config.run.chunk_rows,
    )
    trainer = open_trainer(config, writer, clock, on_phase)
    control: Control = (None, None)
    try:
        writer.note_instrument(instance_of(instrument))
        if python is not None and python.names():
            writer.note_python_parts(python.names())
        control = open_control(config, writer, description, clock, operator_stop, context)
        if on_open is not None:
            on_open(writer.root)
        rng = np.random.default_rng(config.run.seed)
        policy = build_policy(
            config.policy,
            description.spectral_axis,
            rng,
            image,
            candidates,
            notes,
            trainer,
            on_phase,
            config.training.device,
            python,
        )
    except Stopped as exc:
        return close_unstarted(writer, trainer, control, CampaignResult(0, 0, str(exc), 0.0))
    except BaseException as exc:
        close_unstarted(writer, trainer, control, None, exc)
        raise
    parts = CampaignParts(config, description, instrument, policy, writer, candidates, trainer, image)
    campaign = build_campaign(parts, clock, operator_stop, on_step, control[0])
    return run_to_close(campaign, parts, control[1])


Control = tuple[OperatorControl | None, ControlServer | None]
"""The operator's hold on a campaign and the socket that serves it (both ``None`` without a context)."""


def open_control(
    config: RunConfig,
    writer: RunWriter,
    description: InstrumentDescription,
    clock: Clock,
    operator_stop: OperatorStop,
    context: zmq.Context[Any] | None,
) -> Control:
    """The operator control and its loopback socket (endpoint stored in the run), when a ``context`` is given."""
    if context is None:
        return None, None
    operator = OperatorControl(
        clock,
        lambda a: writer.record_operator_action(a.to_json()),
        operator_stop,
        approval_timeout_s=config.operator.approval_timeout_s,
        on_timeout=config.operator.on_timeout,
        retargetable=config.policy.name not in ("random", "raster"),
    )
    section = config.operator
    auth = ServerAuth.from_files(section.authorised_keys, section.key, "operator.authorised_keys and operator.key")
    server = ControlServer(operator, description, context, section.endpoint, auth)
    writer.set_control_endpoint(server.endpoint, auth.server.public if auth is not None else None)
    return operator, server


def open_trainer(
    config: RunConfig, writer: RunWriter, clock: Clock, on_phase: PhaseProgress | None
) -> Trainer[Snapshot]:
    """The trainer ``policy.training`` names; a Dask trainer records where it trains, and any fallback, in the run."""
    training = config.policy.training
    if training != "dask":
        return make_trainer(training)
    section = config.training
    if on_phase is not None:
        on_phase(f"connecting to the Dask scheduler {section.scheduler}", 0, 1)

    def fell_back(reason: str) -> None:
        writer.record_training({"time": clock.time(), "event": "fallback", "training": "background", "reason": reason})

    trainer = make_trainer(training, section, clock=clock.monotonic, on_fallback=fell_back)
    if on_phase is not None:
        on_phase(f"connecting to the Dask scheduler {section.scheduler}", 1, 1)
    writer.record_training(
        {"time": clock.time(), "event": "start", "training": "dask", "scheduler": section.scheduler,
         "device": section.device}
    )  # fmt: skip
    return trainer


def stop_helpers(trainer: Trainer[Snapshot], server: ControlServer | None) -> None:
    """Stop what runs beside a campaign: its control socket (if any) and its trainer."""
    if server is not None:
        server.close()
    trainer.close()


def close_unstarted(
    writer: RunWriter,
    trainer: Trainer[Snapshot],
    control: Control,
    result: CampaignResult | None,
    error: BaseException | None = None,
) -> RunOutcome:
    """Close a run whose campaign never started (stopped or failed during the policy's start-up)."""
    stop_helpers(trainer, control[1])
    reason = result.stop_reason if result else f"error: {type(error).__name__}: {error}"
    writer.close(outcome={"stop_reason": reason, "n_recorded": writer.n_recorded})
    return RunOutcome(writer.root, result, error)


@dataclass(frozen=True)
class CampaignParts:
    """What a campaign is built from, whether new or resumed."""

    config: RunConfig
    description: InstrumentDescription
    instrument: Instrument
    policy: Policy
    writer: RunWriter
    candidates: CandidateSet
    trainer: Trainer[Snapshot]
    reference: Image


def instance_of(instrument: Instrument) -> str | None:
    """The instrument instance id its status reports (a restarted server has a new one), if any."""
    instance = instrument.status().get("instance")
    return str(instance) if instance is not None else None


def build_campaign(
    parts: CampaignParts,
    clock: Clock,
    operator_stop: OperatorStop,
    on_step: Callable[[StepReport], None] | None,
    operator: OperatorControl | None,
) -> Campaign:
    """The campaign over ``parts``, held by ``operator`` (from ``open_control``) when there is one."""
    config, writer, description = parts.config, parts.writer, parts.description
    if config.pipelined:  # durability of each row off the loop's thread too (see RunWriter.group_commit)
        writer.group_commit()
    campaign = Campaign(
        instrument=parts.instrument,
        policy=parts.policy,
        recorder=writer,
        candidates=parts.candidates,
        spectral_axis=description.spectral_axis,
        stop_rules=[Budget(config.stop.budget), WallTime(config.stop.max_wall_time_s), operator_stop],
        clock=clock,
        request_prefix=writer.run_id[:12],
        batch_size=config.policy.batch_size,
        on_step=_checkpointing(parts.policy, writer, on_step),
        safety=config.safety.limits([a.name for a in description.axes]),
        max_refusals=config.safety.max_refusals,
        fault_retries=config.faults.retries_per_point,
        max_faults_in_a_row=config.faults.max_in_a_row,
        operator=operator,
        drift=drift_tracker(parts, clock),
        pipeline=config.pipelined,
        on_drift=lambda estimate: writer.record_drift(estimate.to_json()),
    )
    return campaign


def drift_tracker(parts: CampaignParts, clock: Clock) -> DriftTracker | None:
    """The drift tracker ``[drift]`` asks for (``None`` when off), going on from the run's drift track."""
    if not parts.config.drift.enabled:
        return None
    tracker = DriftTracker(parts.config.drift, parts.reference, parts.description.axes, clock)
    tracker.restore(parts.writer.drift_track)
    return tracker


def _checkpointing(
    policy: Policy, writer: RunWriter, on_step: Callable[[StepReport], None] | None
) -> Callable[[StepReport], None] | None:
    """``on_step``, first noting each new snapshot's refit in the run and saving its features' checkpoint (resume)."""
    if not isinstance(policy, BOPolicy):
        return on_step
    seen = [0]

    def step(report: StepReport) -> None:
        snap = policy.bo.snapshot
        if snap is not None and snap.version != seen[0]:
            writer.note_refit(
                {
                    "version": snap.version,
                    "n_obs": snap.n_obs,
                    "cut": snap.cut,
                    "fit_s": snap.fit_s,
                    "device": snap.device,
                    "host": snap.host,
                    "used_from_step": report.decision.step,
                }
            )
            if snap.features_checkpoint is not None:
                save_feature_checkpoint(writer.root, snap.version, *snap.features_checkpoint)
            seen[0] = snap.version
        if on_step is not None:
            on_step(report)

    return step


def run_to_close(
    campaign: Campaign,
    parts: CampaignParts,
    control: ControlServer | None,
    *,
    first_step: int = 0,
    reconcile: Sequence[Decision] = (),
) -> RunOutcome:
    """Run ``campaign`` and close its run (consistent, with its outcome) whatever happens."""
    writer = parts.writer
    result: CampaignResult | None = None
    error: BaseException | None = None
    try:
        result = campaign.run(first_step, writer.n_recorded, reconcile)
    except (Exception, KeyboardInterrupt) as exc:
        error = exc
    finally:
        stop_helpers(parts.trainer, control)
        outcome = {
            "stop_reason": result.stop_reason if result else f"error: {type(error).__name__}: {error}",
            "n_recorded": writer.n_recorded,
        }
        writer.close(outcome=outcome)
    return RunOutcome(writer.root, result, error)
