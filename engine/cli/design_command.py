"""The ``dualscope design`` command: parse, compose (engine.cli.design), run with a progress bar, report."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine.cli.console import out
from engine.clock import SystemClock
from engine.config import validate_model
from engine.design import DesignConfig, DesignHistory, load_design_config

if TYPE_CHECKING:
    from engine.cli.design import DesignProblem


def design(
    config_path: Annotated[
        Path, typer.Argument(metavar="CONFIG.toml", help="Design configuration (see examples/design.toml).")
    ],
    executor: Annotated[
        str | None, typer.Option(help="Override [executor] kind: inline, threads, servers or dask.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(help="Override [executor] workers (evaluations in flight).", min=1)
    ] = None,
    scheduler: Annotated[
        str | None, typer.Option(help="Dask scheduler address tcp://HOST:8786 (implies --executor dask).")
    ] = None,
    budget: Annotated[int | None, typer.Option(help="Override [stop] budget (evaluations per search).", min=1)] = None,
) -> None:
    """Inverse design: find structures whose simulated spectrum matches a target.

    The file gives a target (a spectrum file, "a peak at E eV of width w", a known structure, or a
    scalariser to maximise), a design space (parametric clusters: arrangement, number, radius, gap,
    material, doping; or a trained structure VAE's latent space), the coupled-dipole simulator's
    range, and a budget. Bayesian optimisation (a GP on the decoded design, UCB with a small fixed β
    by default, asynchronous batches: a new design whenever a worker is free) runs first, then random search and scipy's
    differential evolution with the same budget and simulator. Structures, spectra and decisions
    stream into `runs/<name>-<timestamp>.zarr`; the figure next to it shows convergence, the best
    structures and their spectra against the target. Evaluations run inline, on threads, on a pool of
    `dualscope serve design-cda` processes over ZeroMQ, or on Dask (--scheduler, or a LocalCluster of
    --workers processes on loopback). A worker that dies mid-evaluation costs a re-submission, recorded
    in the run, never the campaign.
    """
    config, text = load_design_config(config_path)
    _run(_override(config, executor, workers, scheduler, budget), text)


def _override(
    config: DesignConfig, executor: str | None, workers: int | None, scheduler: str | None, budget: int | None
) -> DesignConfig:
    """Apply the command-line overrides, validated like the file."""
    ex: dict[str, Any] = {}
    if executor is not None:
        ex["kind"] = executor
    if scheduler is not None:
        ex["kind"], ex["scheduler"] = "dask", scheduler
    if workers is not None:
        ex["workers"] = workers
    data = config.model_dump()
    data["executor"] = {**data["executor"], **ex}
    if budget is not None:
        data["stop"] = {"budget": budget}
    return validate_model(data, DesignConfig, "command-line options")


def _run(config: DesignConfig, text: str) -> None:
    from engine.cli.design import run_design_config, write_figure

    n_searches = 1 + len(config.optimiser.baselines)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[best]}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=out) as bar:
        task = bar.add_task("design", total=config.stop.budget * n_searches, best="")
        done: dict[str, int] = {}

        def on_result(method: str, h: DesignHistory, best: float) -> None:
            done[method] = len(h.spectra)
            bar.update(task, completed=sum(done.values()), description=method, best=f"last {best:.3g}")

        def on_start(problem: DesignProblem) -> None:
            bar.console.print(
                f"Target: [bold]{problem.goal}[/]; "
                f"space {config.space.kind} ({problem.pool.shape[0]} candidates, {problem.pool.shape[1]} coordinates); "
                f"executor {config.executor.kind} × {config.executor.workers}"
            )

        outcome = run_design_config(config, text, SystemClock(), _load_latent, on_start, on_result)
    problem, summaries, root = outcome.problem, outcome.summaries, outcome.run_path
    out.print(f"Run:    [bold]{root}[/]")
    table = Table(title="inverse design: best of each search")
    targeted = problem.target is not None
    best = "best distance to the target (relative L2)" if targeted else f"best {problem.goal}"
    for col in ("search", "evaluations", "failures", best, "calls to target", "best structure"):
        table.add_column(col)
    for s in summaries:
        table.add_row(
            s.method, str(s.evaluations), str(s.failures), f"{-s.best_score if targeted else s.best_score:.4g}",
            "-" if s.calls_to_target is None else str(s.calls_to_target),
            problem.describe(s.best_design) if s.evaluations else "-",
        )  # fmt: skip
    out.print(table)
    if config.run.figure:
        figure = write_figure(root.with_suffix(".png"), problem, summaries)
        out.print(f"Figure: [bold]{figure}[/]")


def _load_latent(config: DesignConfig) -> Any:
    import torch

    from engine.design import LatentDesignSpace
    from engine.io import load_surrogate
    from simulators.particles import detect_spheres

    assert config.space.checkpoint is not None
    surrogate = load_surrogate(config.space.checkpoint, torch.device("cpu"))
    px = config.space.pixel_nm
    return LatentDesignSpace(surrogate, lambda patch: detect_spheres(patch, px), config.space.latent_span)
