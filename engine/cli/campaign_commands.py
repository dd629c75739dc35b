"""``dualscope demo``, ``run``, ``resume`` and ``replay``: campaigns under a progress bar."""

from __future__ import annotations

import getpass
import signal
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated, Any

import typer
import zmq
from rich.markup import escape
from rich.progress import Progress

from engine.campaign import OperatorStop, StepReport
from engine.candidates import CandidateSet
from engine.cli.console import CampaignBars, campaign_columns, err, out
from engine.clock import SystemClock
from engine.config import RunConfig, load_config, parse_config, parse_window
from engine.protocols import Instrument, PhaseProgress

if TYPE_CHECKING:  # the wiring pulls in the policies (torch, botorch): imported when a campaign starts
    from engine.cli.wiring import RunOutcome
    from engine.view import ViewServer

OnStep = Callable[[StepReport], None]
OnOpen = Callable[[Path], None]
Execute = Callable[
    [Instrument, SystemClock, OperatorStop, OnStep, PhaseProgress, "zmq.Context[Any]", OnOpen], "RunOutcome"
]
"""Runs a campaign on an open instrument: (instrument, clock, operator stop, step and phase progress, context,
what to do once the run exists)."""

ViewOption = Annotated[
    bool,
    typer.Option(
        "--view",
        help="Serve the live view of the run on 127.0.0.1 while the campaign runs (as `dualscope view`; "
        "the URL is printed). The buttons act as you, on a campaign without keys.",
    ),
]
ViewPortOption = Annotated[int, typer.Option(help="The live view's port with --view (0: any free one).")]


@contextmanager
def _operator_stop() -> Iterator[OperatorStop]:
    """First Ctrl-C or SIGTERM: stop after the current measurement. Second: interrupt now (the run is still closed)."""
    stop = OperatorStop()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.event.is_set():
            raise KeyboardInterrupt
        stop.request()
        what = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
        err.print(
            f"[yellow]{what}: stopping after the current measurement or phase ({what} again to interrupt now)…[/]"
        )

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_campaign(
    config: RunConfig, text: str, candidates: CandidateSet | None = None, view_port: int | None = None
) -> RunOutcome:
    """Run a new campaign (``engine.Experiment``'s path) under a progress bar and print its outcome."""
    from engine.cli.experiment import Experiment

    return with_progress(config, Experiment(config, text, candidates=candidates).execute, view_port=view_port)


def with_progress(config: RunConfig, execute: Execute, start: int = 0, view_port: int | None = None) -> RunOutcome:
    """Open the instrument, run ``execute`` under progress bars (Ctrl-C or SIGTERM stop cleanly), report the outcome.

    With ``view_port`` the live view of the run is served on that loopback port from the moment the
    run exists until the campaign ends.
    """
    from engine.cli.wiring import checked_instrument
    from engine.report import decisions_without_model, summary_figure
    from engine.storage import read_run

    clock = SystemClock()
    context: zmq.Context[Any] = zmq.Context()
    began = clock.monotonic()
    views: list[ViewServer] = []

    def serve_view(path: Path) -> None:
        if view_port is None:
            return
        from engine.cli.view_command import ControlLink, run_truth
        from engine.view import ViewServer

        link = ControlLink(path, context, getpass.getuser())
        views.append(ViewServer(path, link, port=view_port, truth=run_truth(path)))
        out.print(f"View:   {views[-1].url}  (live while the campaign runs)", highlight=False, soft_wrap=True)

    try:
        with _operator_stop() as stop, checked_instrument(config, context, clock) as instrument:
            desc = instrument.describe()
            out.print(f"Instrument: [bold]{desc.name}[/] ({config.instrument.mode}); policy {config.policy.name}")
            with Progress(*campaign_columns(), console=out) as progress:
                feedback = CampaignBars(progress, stop.event, config.stop.budget, start, clock)
                outcome = execute(instrument, clock, stop, feedback.step, feedback.phase, context, serve_view)
    finally:
        for view in views:
            view.close()
        context.term()
    total_s = clock.monotonic() - began
    out.print(f"Run:    [bold]{outcome.run_path}[/]")
    recorded = read_run(outcome.run_path)  # read once: the figure, the refit time and the model check
    if config.run.figure:
        figure = summary_figure(recorded, outcome.run_path.with_suffix(".png"))
        out.print(f"Figure: [bold]{figure}[/]")
    if outcome.error is not None:
        what = escape(f"{type(outcome.error).__name__}: {outcome.error}")
        err.print(f"[red]The campaign stopped on an error:[/] {what}")
        err.print("Everything measured before the error is recorded in the run above.")
        raise typer.Exit(1)
    assert outcome.result is not None
    r = outcome.result
    out.print(f"Done:   {r.n_recorded} spectra; {r.stop_reason}.")
    for what, seconds in feedback.seconds.items():
        out.print(f"Time:   {_duration(seconds)} {what}")
    out.print(f"Time:   {_duration(r.elapsed_s)} measuring; {_duration(total_s)} in all")
    if r.missing:
        out.print(f"        {r.missing} chosen positions were never measured in the recording (marked as missing).")
    if r.faults:
        out.print(f"        {r.faults} failed measurements recorded as missing, with what was done about each.")
    if r.refused:
        out.print(f"        {r.refused} proposals refused by the safety limits (recorded as missing, with why).")
    refit_s = sum(float(refit.get("fit_s", 0.0)) for refit in recorded.attrs.get("refits", []))
    if refit_s:
        how = "inline: decisions waited for them" if config.policy.training == "inline" else "on a background thread"
        out.print(f"Time:   {_duration(refit_s)} refitting the model ({how})")
    blind = decisions_without_model(recorded)
    if config.policy.name not in ("random", "raster") and blind > config.policy.initial:
        err.print(
            f"[yellow]warning:[/] {blind} decisions were taken without a model (initial = {config.policy.initial}): "
            'they were random because no refit had finished; use training = "inline" or '
            "wait_for_first_model = true, or a slower instrument"
        )
    return outcome


def _duration(seconds: float) -> str:
    """``24.6 s`` or ``5:55`` (m:ss) for a minute or more."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(round(seconds), 60)
    return f"{m}:{s:02d}"


def demo(
    budget: Annotated[int, typer.Option(help="Spectra to measure.", min=1)] = 200,
    output_dir: Annotated[Path, typer.Option(help="Where the runs and the figure go.")] = Path("runs"),
) -> None:
    """Run the demo campaign against the STEM-EELS digital twin, and two baselines next to it.

    The simulator runs in its own process, served over ZeroMQ on a random loopback port; the
    dualvae-spectral policy (dual VAE pre-trained on the HAADF image; the spectra it predicts for
    every candidate, valued by the 0.40-0.55 eV gap-mode band and corrected by a GP on the measured
    values; log expected improvement; refits on a background thread) measures 200 spectra, writes
    `runs/demo-<timestamp>.zarr` and stops the server. The position-only GP and random search then
    run with the same budget on the same twin in-process (runs/gp-position-baseline-*.zarr,
    runs/random-baseline-*.zarr), and the figure next to the first run shows, from the twin's
    noise-free spectra, how fast each found the top 1 % of locations. The configuration is
    examples/demo.toml.

    Example: `dualscope demo --budget 50 --output-dir /tmp/runs`
    """
    from engine.cli.demo_truth import demo_configs, twin_discovery
    from engine.report import measurements_to, summary_figure
    from engine.storage import RunData, read_run

    text = resources.files("engine.cli").joinpath("demo.toml").read_text(encoding="utf-8")
    config, baselines = demo_configs(parse_config(text, "demo.toml"), budget, output_dir)
    main_run = run_campaign(config, text)
    runs: dict[str, RunData] = {config.policy.name: read_run(main_run.run_path)}
    for baseline in baselines:
        name = baseline.policy.name
        out.print(f"[bold]Baseline:[/] {name} on the same twin (in-process), same budget")
        done = run_campaign(baseline, text + f"\n# demo baseline: policy {name}, mode local, training inline\n")
        runs[name] = read_run(done.run_path)
    curves, top = twin_discovery(config, runs, SystemClock())
    figure = summary_figure(
        runs[config.policy.name], main_run.run_path.with_suffix(".png"), discovery=curves, top_size=top
    )
    for label, curve in curves.items():
        n50 = measurements_to(curve)
        reached = f"50 % after {n50:.0f} measurements" if n50 < float("inf") else "50 % not reached"
        out.print(
            f"Found:  {label}: {curve[-1]:.0%} of the top {top} locations in {curve.size} measurements ({reached})"
        )
    out.print(f"Figure: [bold]{figure}[/]")


def run(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG.toml", help="Campaign configuration (see examples/).")],
    defaults: Annotated[
        bool, typer.Option(help="Let missing [instrument], [policy] and [stop] tables take their defaults.")
    ] = False,
    view: ViewOption = False,
    view_port: ViewPortOption = 5006,
) -> None:
    """Run the campaign a TOML configuration describes.

    The file names the instrument, the candidate grid, the policy, the stop rules and the output
    directory (see examples/demo.toml). Ctrl-C stops cleanly after the current measurement; the run is
    closed consistent whatever happens. On a live microscope, `[drift] enabled = true` follows the
    specimen's drift with tracking frames, and `[run] pipeline = true` decides the next point while
    the instrument measures the last (docs/drift.md, docs/wire-protocol.md).

    Example: `dualscope run examples/demo.toml --view`   (then open http://127.0.0.1:5006/)
    """
    config, text = load_config(config_path, defaults=defaults)
    run_campaign(config, text, view_port=view_port if view else None)


def resume(
    run_path: Annotated[Path, typer.Argument(metavar="RUN.zarr", help="The run of a campaign that was killed.")],
    view: ViewOption = False,
    view_port: ViewPortOption = 5006,
) -> None:
    """Continue a campaign that was killed (Ctrl-C twice, SIGKILL, a crash, a power cut).

    Recovers the run (nothing acquired is lost), rebuilds the campaign from the configuration stored
    in it, restores the policy (its RNG state and model, from the state stored with the last
    decision, plus the data recorded since) and asks the instrument what it did with the command in
    flight at the crash, by its request id: a measurement it made is fetched, not repeated; one it
    cannot account for (it restarted) is measured again and recorded as a possible repeat in the
    run's 'repeats'. After a power cut, a pipelined run may have lost its last few steps before they
    were durable: they are fetched from the instrument by request id, never measured again. With the
    same instrument and `training = "inline"` the resumed run makes the same decisions as one never
    interrupted. A run that was closed has nothing to resume.

    Example: `dualscope resume runs/demo-20260101-120000.zarr`
    """
    from engine.cli.resuming import open_for_resume, resume_run

    opened = open_for_resume(run_path, SystemClock())
    if isinstance(opened, str):
        out.print(f"{run_path} is closed ({escape(opened)}); nothing to resume.")
        return
    writer, config, report = opened.writer, opened.config, opened.report
    out.print(
        f"Recovered {run_path}: {report.committed_after} rows ({report.replayed_rows} from the journal)"
        + (f"; in flight at the crash: {', '.join(report.in_flight)}" if report.in_flight else "")
    )

    def execute(
        inst: Instrument,
        clock: SystemClock,
        stop: OperatorStop,
        step: OnStep,
        phase: PhaseProgress,
        ctx: zmq.Context[Any],
        on_open: OnOpen,
    ) -> RunOutcome:
        return resume_run(writer, config, inst, clock, stop, step, ctx, phase, on_open)

    try:
        with_progress(config, execute, start=writer.n_recorded, view_port=view_port if view else None)
    except BaseException:
        writer.release(status="interrupted")
        raise
    _say_fetched(run_path)


def _say_fetched(run_path: Path) -> None:
    """Say which steps the resume fetched back from the instrument (lost to a power cut), if any."""
    from engine.storage import read_run

    resumes = read_run(run_path).attrs.get("resumes") or [{}]
    last = resumes[-1]
    fetched, failed = last.get("fetched_from_instrument") or [], last.get("failed_at_instrument") or []
    if fetched or failed:
        out.print(
            f"Fetched from the instrument: {len(fetched)} steps the run had lost before they were durable"
            + (f"; {len(failed)} it had answered with an error (recorded as missing)" if failed else "")
        )
    if last.get("fetch_note"):
        out.print(f"[yellow]note:[/] {escape(str(last['fetch_note']))}")


def replay(
    source: Annotated[Path, typer.Argument(metavar="DATA", help="Recorded data: any importable file, dataset or run.")],
    policy: Annotated[
        str,
        typer.Option(
            help="random, raster, gp-position, dualvae-bo or dkl. Model-based policies maximise the signal "
            "integrated over --band; for another scalariser run `dualscope run` with driver = 'replay'."
        ),
    ] = "random",
    budget: Annotated[int, typer.Option(help="Spectra to measure.", min=1)] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the policy (same seed and policy → same decisions).")] = 0,
    output_dir: Annotated[Path, typer.Option(help="Where the run and its figure go.")] = Path("runs"),
    noise: Annotated[str, typer.Option(help="none or poisson (resample the recorded counts).")] = "none",
    acquisition_time_s: Annotated[float, typer.Option(help="Dwell to wait per spectrum.")] = 0.0,
    channel: Annotated[
        str | None,
        typer.Option(help="A Nanonis .3ds grid's channel, e.g. 'LIX 1 omega (A)' (default: its first channel)."),
    ] = None,
    training: Annotated[
        str,
        typer.Option(
            help="inline: each decision waits for its refit (default: a replay has no instrument time to hide "
            "training behind); background: refits on a thread, decisions use the latest finished model."
        ),
    ] = "inline",
    refit_every: Annotated[int, typer.Option(help="New measurements between model refits.", min=1)] = 1,
    band: Annotated[
        str, typer.Option(help="What the policy maximises: the signal integrated over LOW:HIGH (default: all).")
    ] = "",
    scalariser: Annotated[
        str,
        typer.Option(
            help="Another scalariser, as [policy.scalariser] keys: 'kind = \"peak\", low = 1, high = 4', "
            "'kind = \"ratio\", low = 1, high = 2, low_b = 3, high_b = 4', 'kind = \"loop-area\"'."
        ),
    ] = "",
    view: ViewOption = False,
    view_port: ViewPortOption = 5006,
) -> None:
    """Replay recorded data through the same loop.

    The data are served over ZeroMQ by the replay driver in its own process, and the policy chooses
    among the recorded positions; the same policy and seed give the same decisions.

    Example: `dualscope replay ../shared/data/BEPS_PTO_50x50.h5 --policy gp-position --band 2:8 --budget 50`
    """
    from engine.io import replay_setup

    window = parse_window(band, "--band")
    setup = replay_setup(
        source, policy, budget, seed, output_dir, noise, acquisition_time_s, channel, training, refit_every, window,
        scalariser,
    )  # fmt: skip
    run_campaign(setup.config, setup.text, setup.candidates, view_port=view_port if view else None)
