"""``dualscope``: run autonomous microscopy campaigns, serve instruments, inspect runs."""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
import zarr
import zmq
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table

from engine import __version__
from engine.campaign import StepReport
from engine.cli.ctl_command import ctl
from engine.cli.design_command import design
from engine.cli.drivers import DRIVERS, build_driver, driver_options
from engine.cli.keys_command import keys_app
from engine.cli.limits_command import limits
from engine.cli.resuming import resume_run
from engine.cli.wiring import RunOutcome, execute_run, open_instrument
from engine.clock import SystemClock
from engine.config import RunConfig, SafetyFile, load_config, load_model, parse_config
from engine.errors import ConfigError, DualscopeError
from engine.protocols import Instrument
from engine.report import summary_figure
from engine.stop_rules import OperatorStop
from engine.storage import read_run, recover_run
from engine.storage.integrity import check_run
from engine.storage.reader import RunData, array_node, open_run_group, read_candidates
from instruments.auth import ServerAuth

app = typer.Typer(
    name="dualscope",
    help=(
        "Autonomous structure→property experiments on microscopes. A campaign takes a cheap "
        "structural image, then spends each expensive spectrum where a policy decides, streaming "
        "every spectrum and decision into a crash-safe Zarr run.\n\n"
        "Start with `dualscope demo`; see `dualscope COMMAND --help` for each command."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
)
out = Console()
out_console = out
err = Console(stderr=True)


def _version(value: bool) -> None:
    if value:
        out.print(f"dualscope {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Dualscope command line."""


@contextmanager
def _operator_stop() -> Iterator[OperatorStop]:
    """First Ctrl-C: stop after the current measurement. Second: interrupt now (the run is still closed)."""
    stop = OperatorStop()

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.event.is_set():
            raise KeyboardInterrupt
        stop.request()
        err.print("[yellow]Stopping after the current measurement (Ctrl-C again to interrupt now)…[/]")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield stop
    finally:
        signal.signal(signal.SIGINT, previous)


OnStep = Callable[[StepReport], None]
Execute = Callable[[Instrument, SystemClock, OperatorStop, OnStep, "zmq.Context[Any]"], RunOutcome]
"""Runs a campaign on an open instrument: (instrument, clock, operator stop, progress callback, context)."""


def _run_campaign(config: RunConfig, text: str, candidates: Any = None) -> RunOutcome:
    return _with_progress(
        config, lambda inst, clock, stop, step, ctx: execute_run(config, text, inst, clock, stop, step, candidates, ctx)
    )


def _with_progress(config: RunConfig, execute: Execute, start: int = 0) -> RunOutcome:
    """Open the instrument, run ``execute`` under a progress bar (Ctrl-C stops cleanly), report the outcome."""
    clock = SystemClock()
    context: zmq.Context[Any] = zmq.Context()
    try:
        with _operator_stop() as stop, open_instrument(config.instrument, context, clock) as instrument:
            desc = instrument.describe()
            out.print(f"Instrument: [bold]{desc.name}[/] ({config.instrument.mode}); policy {config.policy.name}")
            columns = (
                TextColumn("[progress.description]{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.fields[rate]}"),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=out) as progress:
                task = progress.add_task("measuring", total=config.stop.budget, completed=start, rate="")

                def on_step(report: StepReport) -> None:
                    elapsed = progress.tasks[0].elapsed or 1e-9
                    rate = f"{(report.n_recorded - start) / elapsed:.0f} spectra/s"
                    progress.update(task, completed=report.n_recorded, rate=rate)

                outcome = execute(instrument, clock, stop, on_step, context)
    finally:
        context.term()
    out.print(f"Run:    [bold]{outcome.run_path}[/]")
    if config.run.figure:
        figure = summary_figure(read_run(outcome.run_path), outcome.run_path.with_suffix(".png"))
        out.print(f"Figure: [bold]{figure}[/]")
    if outcome.error is not None:
        what = escape(f"{type(outcome.error).__name__}: {outcome.error}")
        err.print(f"[red]The campaign stopped on an error:[/] {what}")
        err.print("Everything measured before the error is recorded in the run above.")
        raise typer.Exit(1)
    assert outcome.result is not None
    r = outcome.result
    out.print(f"Done:   {r.n_recorded} spectra in {r.elapsed_s:.1f} s; {r.stop_reason}.")
    if r.missing:
        out.print(f"        {r.missing} chosen positions were never measured in the recording (marked as missing).")
    if r.faults:
        out.print(f"        {r.faults} failed measurements recorded as missing, with what was done about each.")
    if r.refused:
        out.print(f"        {r.refused} proposals refused by the safety limits (recorded as missing, with why).")
    return outcome


def _fail(exc: DualscopeError) -> None:
    err.print(f"[red]error:[/] {escape(str(exc))}")
    raise typer.Exit(2)


@app.command()
def demo(
    budget: Annotated[int, typer.Option(help="Spectra to measure.", min=1)] = 200,
    output_dir: Annotated[Path, typer.Option(help="Where the runs and the figure go.")] = Path("runs"),
) -> None:
    """Run the demo campaign against the STEM-EELS digital twin, and random next to it.

    The simulator runs in its own process, served over ZeroMQ on a random loopback port; the
    dualvae-bo policy (dual VAE pre-trained on the HAADF image, a GP on its latent and the probe
    position, log expected improvement of the 0.7-0.9 eV plasmon band, refits on a background
    thread) measures 200 spectra, writes `runs/demo-<timestamp>.zarr` and stops the server. A random
    campaign with the same budget then runs on the same twin in-process (runs/demo-random-*.zarr),
    and the figure next to the first run shows, from the twin's noise-free spectra, how fast each
    found the top 1 % of locations. The configuration is examples/demo.toml.
    """
    text = resources.files("engine.cli").joinpath("demo.toml").read_text(encoding="utf-8")
    try:
        base = parse_config(text, "demo.toml")
        config = base.model_copy(
            update={
                "run": base.run.model_copy(update={"output_dir": output_dir, "figure": False}),
                "stop": base.stop.model_copy(update={"budget": budget}),
            }
        )
        main_run = _run_campaign(config, text)
        out.print("[bold]Baseline:[/] the random policy on the same twin (in-process), same budget")
        random_config = config.model_copy(
            update={
                "run": config.run.model_copy(update={"name": "demo-random"}),
                "instrument": config.instrument.model_copy(
                    update={"mode": "local", "options": {**config.instrument.options, "acquisition_time_s": 0.0}}
                ),
                "policy": config.policy.model_copy(update={"name": "random"}),
            }
        )
        random_run = _run_campaign(random_config, text + "\n# demo baseline: policy random, mode local\n")
    except DualscopeError as exc:
        _fail(exc)
        return
    from engine.cli.demo_truth import twin_discovery
    from engine.discovery import measurements_to

    runs: dict[str, RunData] = {
        config.policy.name: read_run(main_run.run_path),
        "random": read_run(random_run.run_path),
    }
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


@app.command()
def run(
    config_path: Annotated[Path, typer.Argument(metavar="CONFIG.toml", help="Campaign configuration (see examples/).")],
) -> None:
    """Run the campaign a TOML configuration describes.

    The file names the instrument, the candidate grid, the policy, the stop rules and the output
    directory (see examples/demo.toml). Ctrl-C stops cleanly after the current measurement; the run is
    closed consistent whatever happens.
    """
    try:
        config, text = load_config(config_path)
        _run_campaign(config, text)
    except DualscopeError as exc:
        _fail(exc)


@app.command()
def resume(
    run_path: Annotated[Path, typer.Argument(metavar="RUN.zarr", help="The run of a campaign that was killed.")],
) -> None:
    """Continue a campaign that was killed (Ctrl-C twice, SIGKILL, a crash, a power cut).

    Recovers the run (nothing acquired is lost), rebuilds the campaign from the configuration stored
    in it, restores the policy (its RNG state and model, from the state stored with the last
    decision, plus the data recorded since) and asks the instrument what it did with the command in
    flight at the crash, by its request id: a measurement it made is fetched, not repeated; one it
    cannot account for (it restarted) is measured again and recorded as a possible repeat in the
    run's 'repeats'. With the same instrument and `training = "inline"` the resumed run makes the same
    decisions as one never interrupted. A run that was closed has nothing to resume.
    """
    clock = SystemClock()
    try:
        group = open_run_group(run_path)
        attrs: dict[str, Any] = dict(group.attrs["dualscope"])  # type: ignore[arg-type]
        if attrs.get("status") == "closed":
            reason = attrs.get("outcome", {}).get("stop_reason", "closed")
            out.print(f"{run_path} is closed ({escape(str(reason))}); nothing to resume.")
            return
        config = parse_config(str(attrs.get("config_toml", "")), f"{run_path} (stored configuration)")
        report, writer = recover_run(run_path, clock, keep_open=True)
        assert writer is not None
        out.print(
            f"Recovered {run_path}: {report.committed_after} rows ({report.replayed_rows} from the journal)"
            + (f"; in flight at the crash: {', '.join(report.in_flight)}" if report.in_flight else "")
        )
        opened = writer
    except DualscopeError as exc:
        _fail(exc)
        return

    def execute(
        inst: Instrument, clock: SystemClock, stop: OperatorStop, step: OnStep, ctx: zmq.Context[Any]
    ) -> RunOutcome:
        return resume_run(opened, config, inst, clock, stop, step, ctx)

    try:
        _with_progress(config, execute, start=opened.n_recorded)
    except DualscopeError as exc:
        opened.release(status="interrupted")
        _fail(exc)
    except BaseException:
        opened.release(status="interrupted")
        raise


def _parse_options(pairs: list[str], options_json: str) -> dict[str, Any]:
    options: dict[str, Any] = json.loads(options_json) if options_json else {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise typer.BadParameter(f"--option wants KEY=VALUE, got {pair!r}")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def _print_driver_options(driver: str) -> None:
    entry = DRIVERS.get(driver)
    if entry is None:
        _fail(ConfigError(f"unknown driver {driver!r}; available: {', '.join(sorted(DRIVERS))}"))
        return
    table = Table(title=f"options of driver {driver!r}: {entry.summary}")
    for col in ("option", "default", "meaning"):
        table.add_column(col)
    for name, field in entry.options.model_fields.items():
        table.add_row(name, repr(field.default), field.description or "")
    out.print(table)


def _watch_parent(stop: threading.Event) -> None:
    parent = os.getppid()
    while not stop.wait(0.5):
        if os.getppid() != parent:
            stop.set()


@app.command()
def serve(
    driver: Annotated[str, typer.Argument(help=f"Driver to serve: {', '.join(sorted(DRIVERS))}.")],
    endpoint: Annotated[
        str, typer.Option(help="Loopback endpoint to bind; a '*' port picks a free one.")
    ] = "tcp://127.0.0.1:*",
    option: Annotated[
        list[str] | None, typer.Option("--option", "-o", help="Driver option KEY=VALUE (repeatable).")
    ] = None,
    options_json: Annotated[str, typer.Option(help="Driver options as one JSON object.")] = "",
    seed: Annotated[int | None, typer.Option(help="Seed of the simulated specimen and noise (simulators).")] = None,
    exit_with_parent: Annotated[bool, typer.Option(help="Stop when the parent process exits.")] = False,
    list_options: Annotated[bool, typer.Option(help="List the driver's options and exit.")] = False,
    usim: Annotated[
        bool, typer.Option(help="nion only: start Nion's simulated STEM in this process (same as -o usim=true).")
    ] = False,
    authorised_keys: Annotated[
        Path | None,
        typer.Option(help="Require CURVE keys: admit only the clients in this file (`dualscope keys new`)."),
    ] = None,
    server_key: Annotated[
        Path | None, typer.Option(help="This server's .key_secret file (with --authorised-keys).")
    ] = None,
    safety: Annotated[
        Path | None,
        typer.Option(help="A TOML file (a run config, say) whose safety table the server enforces too."),
    ] = None,
) -> None:
    """Serve a driver over ZeroMQ until Ctrl-C or SIGTERM.

    Binds loopback only, unless --authorised-keys and --server-key are given: then every client must
    present a listed CURVE key and may send only what its role allows (refusals are logged).
    Prints `READY <endpoint>` on stdout once bound, so scripts can connect.
    Driver options come from --option KEY=VALUE or --options-json; --list-options shows them.
    """
    if list_options:
        _print_driver_options(driver)
        return
    clock = SystemClock()
    try:
        options = _parse_options(option or [], options_json)
        if seed is not None:
            options["seed"] = seed
        if usim:
            if driver != "nion":
                raise ConfigError(f"--usim is an option of the nion driver, not of {driver!r}")
            options["usim"] = True
        auth = ServerAuth.from_files(authorised_keys, server_key, "--authorised-keys and --server-key")
        drv = build_driver(driver, options, clock)
        limits = None
        if safety is not None:
            section = load_model(safety, SafetyFile)[0].safety
            limits = section.limits([a.name for a in drv.describe().axes])
    except DualscopeError as exc:
        _fail(exc)
        return
    from instruments.server import InstrumentServer

    context: zmq.Context[Any] = zmq.Context()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        server = InstrumentServer(drv, context, clock, endpoint=endpoint, auth=auth, safety=limits)
    except DualscopeError as exc:
        context.term()
        _fail(exc)
        return
    if exit_with_parent:
        threading.Thread(target=_watch_parent, args=(stop,), daemon=True).start()
    print(f"READY {server.endpoint}", flush=True)
    err.print(f"Serving driver [bold]{driver}[/] on {server.endpoint} (protocol v1). Ctrl-C to stop.")
    try:
        server.serve(stop)
    finally:
        server.close()
        context.term()
        close = getattr(drv, "close", None)  # drivers that hold hardware (nion) release it
        if callable(close):
            close()


app.command()(design)
app.command()(ctl)
app.command()(limits)

simulate_app = typer.Typer(help="Generate simulated datasets.", no_args_is_help=True)
app.add_typer(simulate_app, name="simulate")
app.add_typer(keys_app, name="keys")


@simulate_app.command("stem")
def simulate_stem(
    output: Annotated[Path, typer.Option("--out", help="New Zarr spectrum-image dataset to write.")],
    stride: Annotated[int, typer.Option(help="One probe position every STRIDE image pixels.", min=1)] = 4,
    seed: Annotated[int, typer.Option(help="Seed of the specimen and the noise.")] = 0,
    option: Annotated[list[str] | None, typer.Option("--option", "-o", help="Twin option KEY=VALUE.")] = None,
) -> None:
    """Write a STEM-EELS twin spectrum image: the HAADF image and a CDA spectrum on a grid of probe positions."""
    import numpy as np

    from engine.candidates import CandidateSet
    from engine.spectrum_image import SpectrumImage
    from engine.storage.spectrum_images import write_spectrum_image

    try:
        twin = build_driver("stem-twin", {**_parse_options(option or [], ""), "seed": seed}, SystemClock())
        desc, image = twin.describe(), twin.acquire_image("haadf")
        grid = CandidateSet.from_image_grid(image, desc, stride, stride // 2)
        rng = np.random.default_rng(seed + 1)
        expected = np.concatenate([twin.expected_counts(grid.positions[i : i + 200]) for i in range(0, len(grid), 200)])  # type: ignore[attr-defined]
        si = SpectrumImage(
            image, grid.positions, rng.poisson(expected).astype(np.float32), desc.spectral_axis,
            (desc.axes[0], desc.axes[1]), f"dualscope simulate stem --seed {seed}", float(desc.extra["dwell_s"]),
        )  # fmt: skip
        write_spectrum_image(si, output)
    except DualscopeError as exc:
        _fail(exc)
        return
    out.print(f"Dataset: [bold]{output}[/] ({len(grid)} spectra on a {grid.grid_shape[0]} × {grid.grid_shape[1]} grid)")


@simulate_app.command("darkfield")
def simulate_darkfield(
    output: Annotated[Path, typer.Option("--out", help="New Zarr dataset to write.")],
    n: Annotated[int, typer.Option(help="Number of (SEM patch, dark-field spectrum) pairs.", min=1)] = 10_000,
    seed: Annotated[int, typer.Option(help="Seed; the dataset does not depend on --workers.")] = 0,
    workers: Annotated[int, typer.Option(help="Worker processes.", min=1)] = 2,
    option: Annotated[
        list[str] | None,
        typer.Option("--option", "-o", help="Twin option KEY=VALUE (see serve darkfield-twin --list-options)."),
    ] = None,
) -> None:
    """Write N pairs of SEM image patches and dark-field scattering spectra of 1, 2, 3, 4+ sphere clusters.

    The lecture's dual-VAE dataset: labels are the number of particles (4 = 4 or more). Spectra come from
    the coupled-dipole model with Poisson noise; images are SEM-like patches of the same clusters.
    """
    from simulators.darkfield import DarkFieldOptions
    from simulators.darkfield_dataset import write_darkfield_dataset

    try:
        options = driver_options("darkfield-twin", {**_parse_options(option or [], ""), "seed": seed})
        assert isinstance(options, DarkFieldOptions)
        with Progress(
            TextColumn("simulating"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=out,
        ) as progress:
            task = progress.add_task("pairs", total=n)
            path = write_darkfield_dataset(
                output, n, options, workers=workers, progress=lambda k: progress.update(task, completed=k)
            )
    except FileExistsError as exc:
        _fail(ConfigError(str(exc)))
        return
    except DualscopeError as exc:
        _fail(exc)
        return
    out.print(f"Dataset: [bold]{path}[/] ({n} pairs)")


@app.command("import")
def import_(
    source: Annotated[
        Path, typer.Argument(metavar="FILE", help="A .h5 (pyNSID), .npz/.npy, .emd, .dm3/.dm4 file or a run.")
    ],
    out: Annotated[Path, typer.Option(help="New Zarr dataset to write.")],
) -> None:
    """Import a recorded spectrum image (structural image, spectra, axes, units) into a Zarr dataset.

    Velox .emd and Gatan .dm3/.dm4 need the optional rosettasciio reader: pip install -e '.[formats]'.
    """
    from engine.importers import import_file
    from engine.storage.spectrum_images import write_spectrum_image

    try:
        si = import_file(source)
        write_spectrum_image(si, out)
    except DualscopeError as exc:
        _fail(exc)
        return
    spec = si.spectral_axis
    out_console.print(
        f"Imported {si.positions.shape[0]} spectra × {spec.size} channels ({spec.name}, {spec.units}); "
        f"image {si.image.data.shape}"
    )
    for note in si.notes:
        out_console.print(f"[yellow]note:[/] {note}")
    out_console.print(f"Dataset: [bold]{out}[/]")


@app.command()
def replay(
    source: Annotated[Path, typer.Argument(metavar="DATA", help="Recorded data: any importable file, dataset or run.")],
    policy: Annotated[
        str,
        typer.Option(
            help="random, raster, gp-position, dualvae-bo or dkl. Model-based policies maximise the total "
            "counts here; for another scalariser run `dualscope run` with driver = 'replay'."
        ),
    ] = "random",
    budget: Annotated[int, typer.Option(help="Spectra to measure.", min=1)] = 100,
    seed: Annotated[int, typer.Option(help="Seed of the policy (same seed and policy → same decisions).")] = 0,
    output_dir: Annotated[Path, typer.Option(help="Where the run and its figure go.")] = Path("runs"),
    noise: Annotated[str, typer.Option(help="none or poisson (resample the recorded counts).")] = "none",
    acquisition_time_s: Annotated[float, typer.Option(help="Dwell to wait per spectrum.")] = 0.0,
) -> None:
    """Replay recorded data through the same loop.

    The data are served over ZeroMQ by the replay driver in its own process, and the policy chooses
    among the recorded positions; the same policy and seed give the same decisions.
    """
    import numpy as np

    from engine.candidates import CandidateSet
    from engine.importers import import_file

    try:
        si = import_file(source)
        q = json.dumps  # a JSON string is a valid TOML basic string
        text = (
            f"# dualscope replay {source} --policy {policy} --budget {budget} --seed {seed} --noise {noise}\n"
            f'[run]\nname = "replay"\noutput_dir = {q(str(output_dir))}\nseed = {seed}\n'
            f'[instrument]\nmode = "spawn"\ndriver = "replay"\nimage_channel = {q(si.image.channel)}\n'
            "timeout_s = 60.0\n"
            f"[instrument.options]\ndataset = {q(str(source.resolve()))}\nnoise = {q(noise)}\n"
            f"acquisition_time_s = {float(acquisition_time_s)!r}\nseed = {seed}\n"
            f"[policy]\nname = {q(policy)}\n[stop]\nbudget = {budget}\n"
        )
        config = parse_config(text, "replay")  # stored in the run: `dualscope resume` rebuilds it from there
    except DualscopeError as exc:
        _fail(exc)
        return
    except ValueError as exc:
        _fail(ConfigError(str(exc)))
        return
    if not si.complete:  # a recorded run: choose among its own candidates, measured or not
        candidates = read_candidates(source)
    else:
        m = si.positions.shape[0]
        nx = int(np.unique(si.positions[:, 0]).size)
        grid = (m // nx, nx) if nx and m % nx == 0 else (1, m)
        candidates = CandidateSet(si.positions.copy(), si.pixels(), grid)
    try:
        _run_campaign(config, text, candidates)
    except DualscopeError as exc:
        _fail(exc)


@app.command()
def report(
    run_path: Annotated[Path, typer.Argument(metavar="RUN.zarr", help="A run directory.")],
    out: Annotated[Path | None, typer.Option(help="HTML file to write (default: RUN.html).")] = None,
    band: Annotated[
        str, typer.Option(help="Scalar property: band LOW:HIGH in the spectral units (default: all).")
    ] = "",
    surrogate: Annotated[
        Path | None, typer.Option(help="A checkpoint from `dualscope train` (default: train one).")
    ] = None,
    train_steps: Annotated[int, typer.Option(help="Steps for the report's own surrogate.", min=0)] = 300,
    follow: Annotated[bool, typer.Option(help="Regenerate while the run grows; the page reloads itself.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between regenerations with --follow.")] = 5.0,
) -> None:
    """Write a self-contained HTML report of a run (figures embedded as PNG).

    Sections: where the loop looked, the measured property next to the surrogate's predicted map, the
    discovery curve against random and raster replayed on the same recorded data (replayed runs),
    the two latent spaces, and the time of each stage per step. With --follow the page is rewritten
    every --interval seconds until the run is closed, and reloads itself in the browser.
    """
    import time as _time

    target = out or run_path.with_suffix(".html")
    while True:
        try:
            status = _write_report(run_path, target, band, surrogate, train_steps, interval if follow else None)
        except DualscopeError as exc:
            _fail(exc)
            return
        out_console.print(f"Report: [bold]{target}[/] ({status})")
        if not follow or status == "closed":
            return
        _time.sleep(interval)


def _write_report(
    run_path: Path, target: Path, band_text: str, checkpoint: Path | None, steps: int, refresh: float | None
) -> str:
    import tempfile

    import numpy as np
    import torch

    from engine.checkpoints import load_surrogate
    from engine.importers import import_file
    from engine.report_html import Band, render_html, run_sections
    from engine.surrogate import PairedData, Surrogate, SurrogateConfig, extract_patches

    run, integrity = check_run(run_path)
    if run.attrs.get("status") == "closed":
        refresh = None  # nothing more will come: the page need not reload
    values = run.spectral_values
    try:
        low, high = (
            (float(v) for v in band_text.split(":")) if band_text else (float(values.min()), float(values.max()))
        )
    except ValueError:
        raise ConfigError(f"--band wants LOW:HIGH in {run.spectral_axis.units}, got {band_text!r}") from None
    image = next(iter(run.images.values()), None)
    pixels = (
        np.asarray(array_node(zarr.open_group(run_path, mode="r"), "candidate_pixels")[:])
        if image is not None
        else None
    )
    model = None
    patches = None
    if image is not None and pixels is not None:
        patch = 16
        patches = extract_patches(image.data, pixels, patch)
        if checkpoint is not None:
            model = load_surrogate(checkpoint, torch.device("cpu"))
            patches = extract_patches(image.data, pixels, model.patch)
        elif run.n >= 20 and steps > 0:
            rows = run.columns["candidate_index"]
            has = np.zeros(len(pixels), bool)
            has[rows] = True
            spectra = np.zeros((len(pixels), run.spectra.shape[1]), np.float32)
            spectra[rows] = run.spectra
            model = Surrogate(SurrogateConfig(batch_size=64), patch, spectra.shape[1], device=torch.device("cpu"))
            model.fit(PairedData(patches, spectra, has), steps)
    truth = None
    source = run.description.extra.get("source") if run.description.name == "dualscope-replay" else None
    if source and "only measured positions" not in " ".join(run.description.extra.get("notes", [])):
        try:
            truth = import_file(Path(str(source)))
        except DualscopeError:
            truth = None
    with tempfile.TemporaryDirectory() as tmp:
        sections = run_sections(run, integrity, Band(low, high), model, patches, truth, Path(tmp))
    explored = run_path.with_suffix(".explore")
    if (explored / "sections.json").exists():
        from engine.explore_session import load_sections

        sections += [(f"Exploration: {h}", t, png) for h, t, png in load_sections(explored)]
    summary = [(k, str(v)) for k, v in _summary(run, integrity).items() if k not in ("problems", "notes")]
    page = render_html(
        f"dualscope run {run_path.name}", summary, integrity.problems, sections, int(refresh) if refresh else None
    )
    tmp_target = target.with_suffix(".html.partial")
    tmp_target.write_text(page, encoding="utf-8")
    tmp_target.replace(target)  # a browser reloading mid-write never sees half a page
    return str(run.attrs.get("status"))


def _range(text: str, what: str) -> tuple[float, float] | None:
    if not text:
        return None
    try:
        lo, hi = (float(v) for v in text.split(":"))
    except ValueError:
        raise ConfigError(f"{what} wants LOW:HIGH, got {text!r}") from None
    return lo, hi


@app.command()
def explore(
    source: Annotated[Path, typer.Argument(metavar="DATASET_OR_RUN", help="Any importable file, dataset or run.")],
    method: Annotated[
        list[str] | None,
        typer.Option("--method", "-m", help="band, pca, nmf, vae, label, separated (repeatable; default all)."),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Output folder (default: RUN.explore next to a run, else `explore/<name>`).")
    ] = None,
    band: Annotated[
        str, typer.Option(help="Band map window LOW:HIGH in the spectral units (default: middle third).")
    ] = "",
    background: Annotated[str, typer.Option(help="Power-law background fit window LOW:HIGH before an edge.")] = "",
    components: Annotated[int | None, typer.Option(help="PCA components (default: 95 % of the variance).")] = None,
    nmf_components: Annotated[int, typer.Option(help="NMF components.", min=1)] = 4,
    clusters: Annotated[int, typer.Option(help="Clusters of the spectral-VAE latent.", min=2)] = 4,
    labels: Annotated[Path | None, typer.Option(help="CSV of labelled positions: index,label or x,y,label.")] = None,
    steps: Annotated[int, typer.Option(help="Training steps of the VAEs.", min=1)] = 600,
    seed: Annotated[int, typer.Option(help="Seed of the decompositions, VAEs and splits.")] = 0,
) -> None:
    """Look at a spectrum image the usual ways before trusting an autonomous loop.

    Band maps, PCA, NMF, spectral-VAE labels, a labelling classifier, and the separated-VAE baseline
    beside the dual VAE. Writes results.zarr (every map and component), one PNG per method and
    explore.html; for a run, the folder RUN.explore is picked up by `dualscope report RUN.zarr`.
    """
    from engine.explore_session import METHODS, explore_spectrum_image, read_labels, save_exploration
    from engine.importers import import_file

    try:
        si = import_file(source)
        chosen = method or list(METHODS)
        labelled = read_labels(labels, si) if labels is not None else None
        result = explore_spectrum_image(
            si,
            chosen,
            band=_range(band, "--band"),
            background=_range(background, "--background"),
            components=components,
            nmf_components=nmf_components,
            clusters=clusters,
            labels=labelled,
            steps=steps,
            seed=seed,
            progress=lambda what: out_console.print(f"  {what}…"),
        )
        is_run = (source / "zarr.json").exists() and not si.complete
        target = out or (source.with_suffix(".explore") if is_run else Path("explore") / source.stem)
        page = save_exploration(target, si, result, f"exploration of {source.name}")
    except DualscopeError as exc:
        _fail(exc)
        return
    except ValueError as exc:
        _fail(ConfigError(str(exc)))
        return
    for key, value in result.metrics.items():
        out_console.print(f"{key:>24}: {value:.4g}" if isinstance(value, float) else f"{key:>24}: {value}")
    out_console.print(f"Results: [bold]{target / 'results.zarr'}[/]")
    out_console.print(f"Page:    [bold]{page}[/]")


@app.command()
def train(
    dataset: Annotated[
        Path, typer.Argument(metavar="DATASET", help="A `dualscope simulate` dataset or a run (.zarr).")
    ],
    model: Annotated[str, typer.Option(help="dualvae, im2spec or spec2im.")] = "dualvae",
    out: Annotated[Path | None, typer.Option(help="Checkpoint directory (default: `DATASET-<model>/`).")] = None,
    steps: Annotated[int, typer.Option(help="Optimiser steps.", min=1)] = 1500,
    latent: Annotated[int, typer.Option(help="Latent dimension.", min=1)] = 8,
    beta: Annotated[float, typer.Option(help="KL weight.")] = 0.01,
    gamma: Annotated[float, typer.Option(help="Weight of the L1 tie between the two latents (dualvae).")] = 1.0,
    invariant: Annotated[bool, typer.Option(help="Rotation/translation-invariant image VAE.")] = False,
    patch: Annotated[int, typer.Option(help="Patch side in pixels (multiple of 8).")] = 32,
    holdout: Annotated[float, typer.Option(help="Fraction held out for evaluation and calibration.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of weights, batches, split.")] = 0,
    device: Annotated[str, typer.Option(help="torch device, e.g. cpu or cuda:0 (never chosen for you).")] = "cpu",
) -> None:
    """Train a surrogate (im2spec, spec2im or the dual VAE) and write its checkpoint and figures.

    Prints held-out im2spec R² and the 90 % interval coverage before and after calibration, and writes
    latent.png (the dual latent space), latent_grid.png (decoded patches and spectra over the latent
    plane), predictions.png (held-out predictions with their 90 % band) and metrics.json.
    """
    import numpy as np
    import torch

    from engine.checkpoints import save_surrogate
    from engine.datasets import load_paired
    from engine.surrogate import Surrogate, SurrogateConfig
    from engine.surrogate_figures import dual_latent_figure, latent_grid_figure, prediction_figure

    try:
        data, energy, units = load_paired(dataset, patch)
        train_set, held_out = data.split(holdout, np.random.default_rng(seed))
        config = SurrogateConfig(kind=model, latent=latent, beta=beta, gamma=gamma, invariant=invariant)
        surrogate = Surrogate(config, patch, data.channels, device=torch.device(device), seed=seed)
    except (DualscopeError, ValueError) as exc:
        _fail(exc if isinstance(exc, DualscopeError) else ConfigError(str(exc)))
        return
    target = out or dataset.with_name(f"{dataset.stem}-{model}")
    with Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"),
        TimeElapsedColumn(),
        console=out_console,
    ) as progress:
        task = progress.add_task("steps", total=steps, loss="")
        report = surrogate.fit(
            train_set, steps, lambda k, loss: progress.update(task, completed=k, loss=f"loss {loss:.4g}")
        )
    if report.rolled_back:
        err.print(f"[red]training failed and was rolled back:[/] {report.reason}")
        raise typer.Exit(1)
    metrics: dict[str, Any] = {
        "model": model,
        "steps": report.steps,
        "train_seconds": round(report.wall_s, 2),
        "pairs": len(train_set),
    }
    if model != "spec2im":
        mean, _ = surrogate.predict_spectra(held_out.patches)
        y = held_out.spectra
        metrics["im2spec_r2"] = float(1 - ((y - mean) ** 2).sum() / ((y - y.mean(axis=0)) ** 2).sum())
        before, after = surrogate.calibrate(held_out)
        metrics["coverage90_before"], metrics["coverage90_after"] = before, after
    if model != "im2spec":
        pm, _ = surrogate.predict_patches(held_out.spectra)
        metrics["spec2im_mse"] = float(((pm - held_out.patches) ** 2).mean())
    target.mkdir(parents=True, exist_ok=True)
    save_surrogate(surrogate, target)
    figures = [
        dual_latent_figure(surrogate, held_out, energy, target / "latent.png"),
        latent_grid_figure(surrogate, held_out, energy, target / "latent_grid.png"),
    ]
    if model != "spec2im":
        figures.append(prediction_figure(surrogate, held_out, energy, units, target / "predictions.png"))
    (target / "metrics.json").write_text(json.dumps(metrics, indent=2))
    for key, value in metrics.items():
        out_console.print(f"{key:>20}: {value:.4g}" if isinstance(value, float) else f"{key:>20}: {value}")
    out_console.print(f"Checkpoint: [bold]{target}[/]")
    for f in figures:
        out_console.print(f"Figure:     {f}")


@app.command()
def inspect(
    run_path: Annotated[Path, typer.Argument(metavar="RUN.zarr", help="A run directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of a table.")] = False,
    repair: Annotated[
        bool, typer.Option(help="Recover an interrupted run first: commit journaled rows, cut torn writes.")
    ] = False,
) -> None:
    """Summarise a run: counts, axes, policy, time span, timings and integrity.

    Exits 1 if the run has integrity problems. Read-only unless --repair, which commits journaled rows
    of an interrupted run and drops a torn last write.
    """
    try:
        if repair:
            report, _ = recover_run(run_path, SystemClock())
            err.print(
                f"Recovered: {report.replayed_rows} rows replayed from the journal, "
                f"{report.torn_bytes} torn bytes dropped, in flight: {report.in_flight or 'none'}"
            )
        run_data, integrity = check_run(run_path)
    except DualscopeError as exc:
        _fail(exc)
        return
    summary = _summary(run_data, integrity)
    if as_json:
        print(json.dumps(summary, indent=2))
    else:
        table = Table(title=f"dualscope run {run_path}", show_header=False)
        for key, value in summary.items():
            if key not in ("problems", "notes"):
                table.add_row(key, str(value))
        out.print(table)
        for p in integrity.problems:
            out.print(f"[red]problem:[/] {p}")
        for n in integrity.notes:
            out.print(f"[yellow]note:[/] {n}")
        if integrity.ok:
            out.print("[green]integrity: no problems[/]")
    if not integrity.ok:
        raise typer.Exit(1)


def _summary(run: Any, integrity: Any) -> dict[str, Any]:
    import numpy as np

    n, attrs, spec = run.n, run.attrs, run.spectral_axis
    ts = run.columns["timestamps"]
    med = {
        k: round(float(np.nanmedian(run.columns[k])) * 1e3, 3) if n and np.isfinite(run.columns[k]).any() else None
        for k in ("time_decide_s", "time_condition_s", "time_acquire_s", "time_measure_s", "time_record_s")
    }
    return {
        "spectra": n,
        "channels": spec.size,
        "spectral_axis": f"{spec.name} {spec.values().min():.4g}…{spec.values().max():.4g} {spec.units}",
        "axes": ", ".join(f"{a.name} [{a.low:g}, {a.high:g}] {a.units}" for a in run.description.axes),
        "images": ", ".join(f"{k} {v.data.shape}" for k, v in run.images.items()) or "none",
        "candidates": int(run.candidate_positions.shape[0]),
        "instrument": run.description.name,
        "policy": ", ".join(run.policy_names) or "-",
        "status": attrs.get("status"),
        "stop_reason": (attrs.get("outcome") or {}).get("stop_reason", "-"),
        "first_spectrum": _fmt_time(float(ts[0])) if n else "-",
        "last_spectrum": _fmt_time(float(ts[-1])) if n else "-",
        "time_span_s": round(float(ts[-1] - ts[0]), 3) if n else 0.0,
        "median_decide_ms": med["time_decide_s"],
        "median_condition_ms": med["time_condition_s"],
        "median_acquire_ms": med["time_acquire_s"],
        "model_versions": (
            f"{int(run.columns['model_version'].min())}…{int(run.columns['model_version'].max())}" if n else "-"
        ),
        "median_measure_ms": med["time_measure_s"],
        "median_record_ms": med["time_record_s"],
        "journal_pending_rows": integrity.journal_rows,
        "missing_positions": sum(len(m["candidates"]) for m in attrs.get("missing", [])),
        "versions": ", ".join(f"{k} {v}" for k, v in attrs.get("versions", {}).items()),
        "problems": integrity.problems,
        "notes": integrity.notes,
    }


def _fmt_time(t: float) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(t, dt.UTC).isoformat(timespec="seconds")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point (``argv``: the arguments, default ``sys.argv[1:]``)."""
    app(args=argv)


if __name__ == "__main__":
    main()
