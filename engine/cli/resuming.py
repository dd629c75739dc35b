"""Continue a campaign that was killed: recover its run, rebuild it from the stored config, reconcile, go on."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from engine.campaign import (
    CampaignResult,
    OperatorStop,
    StepReport,
    apply_plan,
    fetch_lost_steps,
    plan_resume,
    reconcile,
)
from engine.cli.wiring import (
    CampaignParts,
    Control,
    RunOutcome,
    build_campaign,
    instance_of,
    open_control,
    open_trainer,
    run_to_close,
    stop_helpers,
)
from engine.config import RunConfig, parse_config
from engine.errors import ResumeError, Stopped
from engine.io import load_feature_checkpoint
from engine.policy import BOPolicy, DualVAEFeatures, build_policy
from engine.protocols import Clock, Instrument, PhaseProgress, Policy
from engine.storage import RecoveryReport, RunWriter, open_run_group, read_candidates, read_run, recover_run
from engine.surrogate import CheckpointError


@dataclass(frozen=True)
class OpenedRun:
    """A killed run, recovered and held open for resuming, with its stored configuration."""

    writer: RunWriter
    config: RunConfig
    report: RecoveryReport


def open_for_resume(run_path: Path, clock: Clock) -> OpenedRun | str:
    """Recover ``run_path`` (journaled rows committed, torn writes cut) and parse its stored configuration.

    Returns:
        The opened run, or why a closed run has nothing to resume (its stop reason).

    Raises:
        RunStorageError: not a run, or a damaged one. ConfigError: its stored configuration is invalid.
        ResumeError: it was run with an acquisition or scalariser given from Python.
    """
    attrs: dict[str, Any] = dict(open_run_group(run_path).attrs["dualscope"])  # type: ignore[arg-type]
    if attrs.get("status") == "closed":
        return str(attrs.get("outcome", {}).get("stop_reason", "closed"))
    config = parse_config(str(attrs.get("config_toml", "")), f"{run_path} (stored configuration)")
    if parts := attrs.get("python_parts"):
        given = ", ".join(f"{what} {name}" for what, name in parts.items())
        raise ResumeError(
            f"{run_path} was run from Python with its own {given}; `dualscope resume` can only rebuild what the "
            "stored TOML names. Its measurements are all in the run: start a new campaign from it if needed"
        )
    report, writer = recover_run(run_path, clock, keep_open=True)
    assert writer is not None
    return OpenedRun(writer, config, report)


def resume_run(
    writer: RunWriter,
    config: RunConfig,
    instrument: Instrument,
    clock: Clock,
    operator_stop: OperatorStop,
    on_step: Callable[[StepReport], None] | None = None,
    context: zmq.Context[Any] | None = None,
    on_phase: PhaseProgress | None = None,
    on_open: Callable[[Path], None] | None = None,
) -> RunOutcome:
    """Continue the recovered run ``writer`` holds open, with the ``config`` stored in it.

    The policy is rebuilt from the configuration and seed, then restored from the state stored with
    the last settled decision (RNG, counters, the model refitted on the same data; the dual VAE from
    its last checkpoint in the run) and told what was measured since; the candidates, dose history
    and fault counts are rebuilt from the run. The decisions in flight at the crash are reconciled
    with the instrument by its request id first: its reply is fetched if the instrument made it,
    measured now if it never arrived, and recorded as a possible repeat (attribute ``repeats``) if
    the instrument cannot say. Then the steps a power cut took from the run before they were durable
    (group commit) are fetched from the instrument by request id and carried out again from its
    reply cache. Stop rules count what the run recorded before (the budget); the wall-time limit
    counts from the resume.

    Raises:
        ResumeError: the instrument is not the one the run was made with, or the run lacks its image.
    """
    run = read_run(writer.root)
    description = instrument.describe()
    stored = run.description
    if description.spectral_axis != stored.spectral_axis or description.axes != stored.axes:
        raise ResumeError(
            f"the instrument {description.name!r} does not describe itself as when the run started "
            f"({stored.name!r}: other axes or spectral calibration); resume with the same instrument"
        )
    channel = config.instrument.image_channel
    if channel not in run.images:
        raise ResumeError(f"the run has no structural image {channel!r}; it cannot be resumed")
    candidates = read_candidates(writer.root)
    trainer = open_trainer(config, writer, clock, on_phase)
    control: Control = (None, None)
    try:
        control = open_control(config, writer, stored, clock, operator_stop, context)
        if on_open is not None:
            on_open(writer.root)
        policy = build_policy(
            config.policy,
            stored.spectral_axis,
            np.random.default_rng(config.run.seed),
            run.images[channel],
            candidates,
            [str(n) for n in stored.extra.get("notes", [])],
            trainer,
            on_phase,
            config.training.device,
        )
    except Stopped as exc:  # the run stays resumable: nothing new was measured
        stop_helpers(trainer, control[1])
        writer.release(status="interrupted")
        return RunOutcome(writer.root, CampaignResult(writer.n_recorded, 0, str(exc), 0.0), None)
    except BaseException:
        stop_helpers(trainer, control[1])
        writer.release(status="interrupted")
        raise
    plan = plan_resume(run.attrs, run.columns)
    parts = CampaignParts(config, stored, instrument, policy, writer, candidates, trainer, run.images[channel])
    campaign = build_campaign(parts, clock, operator_stop, on_step, control[0])
    try:
        loaded = _load_features(policy, writer.root, plan.policy_state)
        apply_plan(plan, candidates, policy, campaign.safety)
        campaign.restore_failures(plan.failures)
        entry: dict[str, Any] = {"at": clock.time(), "from_step": plan.next_step, "rows": plan.n_recorded}
        if loaded is not None:
            entry["features_checkpoint"] = loaded
        said = []
        for decision in plan.in_flight:
            found = reconcile(instrument, decision, run.attrs.get("instrument_instance"))
            said.append(found.state)
            if found.repeat_note is not None:
                writer.record_repeat(
                    {"step": decision.step, "request_id": decision.request_id, "note": found.repeat_note}
                )
        if plan.in_flight:
            entry.update(in_flight=[d.request_id for d in plan.in_flight], instrument_said=said)
        lost = fetch_lost_steps(instrument, plan, campaign.request_prefix, candidates, writer.drift_track)
        for decision, error in lost.failed:
            writer.record_missing(decision, f"lost from the run by a power cut; the instrument had answered: {error}")
        if lost.measured or lost.failed or lost.note:
            entry.update(
                fetched_from_instrument=[d.request_id for d in lost.measured],
                failed_at_instrument=[d.request_id for d, _ in lost.failed],
                fetch_note=lost.note,
            )
        writer.note_instrument(instance_of(instrument))
        writer.log_resume(entry)
    except BaseException:
        stop_helpers(trainer, control[1])
        writer.release(status="interrupted")
        raise
    again = sorted([*plan.in_flight, *lost.measured], key=lambda d: d.step)
    first_step = max([plan.next_step, *(d.step + 1 for d in again), *(d.step + 1 for d, _ in lost.failed)])
    return run_to_close(campaign, parts, control[1], first_step=first_step, reconcile=again)


def _load_features(policy: Policy, run_dir: Path, state: Mapping[str, Any] | None) -> int | None:
    """Load the learned features' newest checkpoint up to the stored snapshot's version; its version, if any.

    The first refit after the resume then continues training from it on everything recorded (the data
    since the checkpoint included), instead of from the image-only pretraining.
    """
    features = policy.bo.features if isinstance(policy, BOPolicy) else None
    if state is None or not isinstance(features, DualVAEFeatures):
        return None
    found = load_feature_checkpoint(run_dir, int(state.get("snapshot_version", 0)))
    if found is None:
        return None
    version, meta, weights = found
    try:
        features.load_checkpoint(meta, weights)
    except CheckpointError as exc:
        raise ResumeError(f"cannot load the dual VAE's checkpoint v{version} from the run: {exc}") from exc
    return version
