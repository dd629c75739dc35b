"""``dualscope design``: inverse design against the coupled-dipole simulator (composition root).

Builds the target, the design space (parametric clusters or a structure VAE's latent space), the
simulator, the executor (inline, threads, a pool of ZeroMQ simulator servers, or Dask), the Zarr
run, then runs the Bayesian optimisation and its baselines with the same budget, one after the
other, and writes the figure.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from numpy.typing import NDArray
from scipy.stats import qmc

from engine.candidates import CandidateSet
from engine.cli.spawn import spawned_server
from engine.config import validate_model
from engine.design import (
    DE_NAME,
    DesignConfig,
    DesignHistory,
    DesignLog,
    DesignTarget,
    Executor,
    Geometry,
    InlineExecutor,
    SearchSummary,
    Simulate,
    TargetSection,
    TargetTolerance,
    ThreadExecutor,
    design_figure,
    differential_evolution_search,
    load_target_file,
    peak_target,
    run_design,
    spheres_of,
    summarise,
)
from engine.errors import ConfigError
from engine.policy import (
    BOPolicy,
    InlineTrainer,
    PositionFeatures,
    RandomPolicy,
    ScalarBO,
    Scalariser,
    build_scalariser,
)
from engine.protocols import Clock
from engine.storage import RunWriter, new_run_path
from engine.types import Axis, InstrumentDescription
from simulators.design_sim import ClusterSimOptions, ClusterSimulator, GeometrySimulator
from simulators.design_space import ClusterDesign

BO_NAME = "design-bo"


@dataclass(frozen=True)
class DesignProblem:
    """Everything a search needs, built once from the config.

    Attributes:
        options: the simulator's validated options (bounds, energies, medium, delay).
        target: the target spectrum and tolerances, or None when maximising a scalariser.
        scalariser: what the BO maximises, from spectra ``(n, c)``.
        pool: candidate designs ``(m, d)`` in the unit cube.
        features: the GP's inputs for each pool design ``(m, k)`` (decoded cluster coordinates, or the pool).
        payload: what the executor is sent per pool index ``(m, d')``.
        simulate: payload ``(d',)`` → spectrum ``(c,)``.
        prepare: a point of the cube ``(d,)`` → payload ``(d',)`` (differential evolution).
        geometry: a point of the cube ``(d,)`` → its spheres (figures).
        describe: a point of the cube ``(d,)`` → a one-line description.
        axis_names: names of the ``d`` design coordinates.
    """

    options: ClusterSimOptions
    target: DesignTarget | None
    scalariser: Scalariser
    pool: NDArray[np.float64]
    features: NDArray[np.float64]
    payload: NDArray[np.float64]
    simulate: Simulate
    prepare: Callable[[NDArray[np.float64]], NDArray[np.float64]] | None
    geometry: Callable[[NDArray[np.float64]], Geometry]
    describe: Callable[[NDArray[np.float64]], str]
    axis_names: tuple[str, ...]

    def candidates(self) -> CandidateSet:
        """A fresh candidate set over the pool (each search keeps its own measured/pending marks)."""
        m = self.pool.shape[0]
        return CandidateSet(self.pool, np.zeros((m, 2), np.int64), (1, m))

    @property
    def goal(self) -> str:
        """What the searches aim at, in words."""
        return self.target.label if self.target is not None else f"maximise {self.scalariser.name}"

    def objective(self, spectrum: NDArray[np.float64]) -> float:
        """What every search maximises, from one spectrum ``(c,)``: the target's score, else the scalariser."""
        if self.target is not None:
            return self.target.score(spectrum)
        return float(self.scalariser(np.atleast_2d(spectrum), self.options.energy_ev())[0])

    def score(self, spectra: NDArray[np.float64]) -> NDArray[np.float64]:
        """Reported objective ``(n,)`` of spectra ``(n, c)``: ``−relative L2`` to the target, else the scalariser."""
        if self.target is not None:
            return -self.target.distance(spectra)
        return self.scalariser(np.atleast_2d(spectra), self.options.energy_ev())


def simulator_options(config: DesignConfig) -> ClusterSimOptions:
    """Validate ``[simulator]`` with the simulator's options model."""
    options = validate_model(config.simulator, ClusterSimOptions, "[simulator]")
    try:
        options.space()
    except ValueError as exc:
        raise ConfigError(f"[simulator]: {exc}") from None
    return options


def build_target(section: TargetSection, options: ClusterSimOptions) -> DesignTarget | None:
    """The target the ``[target]`` table describes (None for ``kind = "scalariser"``)."""
    energy = options.energy_ev()
    tol = {"rel_tol": section.rel_tol, "peak_tol_ev": section.peak_tol_ev}
    if section.kind == "peak":
        return peak_target(energy, section.centre_ev, section.width_ev, section.amplitude_nm2, **tol)
    if section.kind == "file":
        if section.file is None:
            raise ConfigError("target.file is required when target.kind = 'file'")
        return load_target_file(section.file, energy, fit_scale=section.match_shape_only, **tol)
    if section.kind == "structure":
        s = section.structure
        try:
            design = ClusterDesign(s.arrangement, s.n, s.radius_nm, s.gap_nm, s.material, s.sn_fraction)
            spectrum = design.spectrum(energy, options.n_medium**2)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"[target.structure]: {exc}") from None
        label = f"{s.n} {s.material} r={s.radius_nm:g} nm, gap {s.gap_nm:g} nm, {s.arrangement}"
        return DesignTarget(spectrum, energy, False, section.rel_tol, section.peak_tol_ev, label)
    return None


def build_problem(config: DesignConfig, load_latent: Callable[[DesignConfig], Any] | None = None) -> DesignProblem:
    """Target, pool and simulator for ``config`` (``load_latent`` builds the latent space from the checkpoint)."""
    options = simulator_options(config)
    target = build_target(config.target, options)
    scalariser: Scalariser = (
        TargetTolerance(target)
        if target is not None
        else build_scalariser(config.target.scalariser, options.spectral_axis())
    )
    rng_seed = config.run.seed
    if config.space.kind == "clusters":
        space = options.space()
        pool = qmc.Sobol(space.dim, seed=rng_seed).random(config.space.pool)

        def cluster_geometry(u: NDArray[np.float64]) -> Geometry:
            d = space.decode(u)
            return d.centres_nm(), np.full(d.n, d.radius_nm)

        def cluster_label(u: NDArray[np.float64]) -> str:
            d = space.decode(u)
            doping = f" Sn {d.sn_fraction:.3f}" if d.material == "ITO" else ""
            return f"{d.n} {d.material}{doping} r={d.radius_nm:.1f} nm gap {d.gap_nm:.1f} nm {d.arrangement}"

        return DesignProblem(
            options, target, scalariser, pool, space.features(pool), pool, ClusterSimulator(options), None,
            cluster_geometry, cluster_label, space.NAMES,
        )  # fmt: skip
    if load_latent is None or config.space.checkpoint is None:
        raise ConfigError("space.kind = 'latent' needs space.checkpoint (a `dualscope train` directory)")
    latent = load_latent(config)
    cube = qmc.Sobol(latent.dim, seed=rng_seed).random(config.space.pool)
    geometry = latent.geometry(cube)
    keep = np.isfinite(geometry).any(axis=1)
    if keep.sum() < 16:
        raise ConfigError(
            f"only {int(keep.sum())} of {cube.shape[0]} latent points decode to a structure with particles; "
            "lower space.latent_span or train the structure VAE longer"
        )

    def prepare(u: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(latent.geometry(u[None, :])[0])

    def latent_geometry(u: NDArray[np.float64]) -> Geometry:
        return spheres_of(prepare(u))

    def latent_label(u: NDArray[np.float64]) -> str:
        _, r = latent_geometry(u)
        return f"{r.size} {config.space.material} spheres, r {r.min():.0f}-{r.max():.0f} nm" if r.size else "empty"

    names = tuple(f"z{i}" for i in range(latent.dim))
    simulate = GeometrySimulator(options, config.space.material)
    return DesignProblem(
        options, target, scalariser, cube[keep], cube[keep], geometry[keep], simulate, prepare, latent_geometry,
        latent_label, names,
    )  # fmt: skip


@contextmanager
def open_executor(config: DesignConfig, problem: DesignProblem, context: zmq.Context[Any]) -> Iterator[Executor]:
    """The executor ``[executor]`` names, closed (servers and clusters stopped) on exit."""
    section = config.executor
    if section.kind == "inline":
        yield InlineExecutor(problem.simulate)
        return
    if section.kind == "threads":
        executor: Executor = ThreadExecutor(problem.simulate, section.workers)
        try:
            yield executor
        finally:
            executor.close()
        return
    if section.kind == "dask":
        from engine.design import DaskExecutor, dask_client

        with dask_client(section.scheduler or None, section.workers) as client:
            executor = DaskExecutor(client, problem.simulate)
            try:
                yield executor
            finally:
                executor.close()
        return
    if config.space.kind != "clusters":
        raise ConfigError("executor.kind = 'servers' serves the cluster space only; use threads or dask")
    from instruments.server_pool import ServerPoolExecutor

    with ExitStack() as stack:
        opts = problem.options.model_dump(mode="json")
        endpoints = [stack.enter_context(spawned_server("design-cda", opts)) for _ in range(section.workers)]
        pool_executor = ServerPoolExecutor(endpoints, context, timeout_s=section.timeout_s)
        stack.callback(pool_executor.close)
        yield pool_executor


def create_run(config: DesignConfig, text: str, problem: DesignProblem, clock: Clock) -> RunWriter:
    """A new Zarr run: the design coordinates are its axes, the pool its candidates."""
    description = InstrumentDescription(
        name="dualscope-design",
        axes=tuple(Axis(n, "1", 0.0, 1.0) for n in problem.axis_names),
        spectral_axis=problem.options.spectral_axis(),
        image_channels=(),
        extra={"space": config.space.kind},  # the simulator's options are in the attribute ``design``
    )
    target = problem.target
    attrs = {
        "design": {
            "space": config.space.model_dump(mode="json"),
            "simulator": problem.options.model_dump(mode="json"),
            "target_label": problem.goal,
            "target_spectrum": target.spectrum.tolist() if target is not None else None,
        }
    }
    path = new_run_path(config.run.output_dir, config.run.name, clock)
    return RunWriter.create(
        path,
        description=description,
        images=[],
        candidates=problem.candidates(),
        config_toml=text,
        clock=clock,
        chunk_rows=config.run.chunk_rows,
        extra_attrs=attrs,
        extra_arrays={"candidate_payload": problem.payload} if config.space.kind == "latent" else None,
    )


def run_searches(
    config: DesignConfig,
    problem: DesignProblem,
    executor: Executor,
    writer: RunWriter | None,
    clock: Clock,
    on_result: Callable[[str, DesignHistory], None] | None = None,
) -> list[DesignHistory]:
    """The BO search, then each baseline, with the same budget, simulator and executor."""
    budget, workers = config.stop.budget, config.executor.workers
    target = problem.target
    stop = None
    if target is not None and config.target.stop_when_reached:

        def stop(h: DesignHistory) -> bool:
            return bool(target.reached(h.spectra[-1])[0])

    def progress(method: str) -> Callable[..., None] | None:
        return None if on_result is None else (lambda o, h: on_result(method, h))

    seed = config.run.seed
    opt = config.optimiser
    bo = ScalarBO(
        problem.scalariser,
        problem.options.energy_ev(),
        opt.acquisition,
        np.random.default_rng(seed),
        opt.initial,
        PositionFeatures(problem.features),
        InlineTrainer(),
        refit_every=opt.refit_every,
        ucb_beta=opt.ucb_beta,
    )
    histories = [
        run_design(
            BOPolicy(BO_NAME, bo), problem.candidates(), executor, budget=budget, workers=workers,
            log=DesignLog(writer, clock, "bo"), stop=stop, on_outcome=progress(BO_NAME), designs=problem.payload,
        )
    ]  # fmt: skip
    for name in opt.baselines:
        rng = np.random.default_rng(seed + 1)
        if name == "random":
            h = run_design(
                RandomPolicy(rng), problem.candidates(), executor, budget=budget, workers=workers,
                log=DesignLog(writer, clock, "random"), stop=stop, on_outcome=progress("random"),
                designs=problem.payload,
            )  # fmt: skip
        else:
            h = differential_evolution_search(
                problem.objective, problem.pool.shape[1], executor, rng, budget=budget,
                log=DesignLog(writer, clock, "de"), stop=stop, settings=opt.de_settings(), prepare=problem.prepare,
            )  # fmt: skip
            if on_result is not None:
                on_result(DE_NAME, h)
        histories.append(h)
    return histories


def summaries_of(problem: DesignProblem, histories: list[DesignHistory]) -> list[SearchSummary]:
    """One ``SearchSummary`` per search."""
    target = problem.target
    return [summarise(h, problem.score, target.reached if target is not None else None) for h in histories]


def write_figure(path: Path, problem: DesignProblem, summaries: list[SearchSummary]) -> Path:
    """The convergence / best-structure / spectra figure."""
    best = [s for s in summaries if s.evaluations]
    geometries = {s.method: problem.geometry(s.best_design) for s in best}
    labels = {s.method: problem.describe(s.best_design) for s in best}
    target = problem.target
    return design_figure(
        path,
        summaries,
        geometries,
        labels,
        problem.options.energy_ev(),
        target.spectrum if target is not None else None,
        target.label if target is not None else "",
        target.rel_tol if target is not None else None,
    )


@dataclass(frozen=True)
class DesignOutcome:
    """What a design run left: its problem, one summary per search, and where the run is."""

    problem: DesignProblem
    summaries: list[SearchSummary]
    run_path: Path


def run_design_config(
    config: DesignConfig,
    text: str,
    clock: Clock,
    load_latent: Callable[[DesignConfig], Any] | None = None,
    on_start: Callable[[DesignProblem], None] | None = None,
    on_result: Callable[[str, DesignHistory, float], None] | None = None,
) -> DesignOutcome:
    """Build the problem, run the BO search and the baselines, and close the run (``dualscope design``'s path).

    Args:
        config: the validated design configuration.
        text: its TOML (stored in the run).
        clock: the time source.
        load_latent: loads a trained structure VAE for ``space.kind = "latent"``.
        on_start: told the problem before the first evaluation.
        on_result: told after each result: the search's name, its history and the last score.

    Returns:
        The problem, the searches' summaries and the run's path.
    """
    problem = build_problem(config, load_latent)
    if on_start is not None:
        on_start(problem)
    context: zmq.Context[Any] = zmq.Context()
    writer = create_run(config, text, problem, clock)
    histories: list[DesignHistory] = []
    status = "failed"

    def told(method: str, h: DesignHistory) -> None:
        if on_result is not None:
            on_result(method, h, float(problem.score(h.spectra[-1])[0]) if h.spectra else float("nan"))

    try:
        with open_executor(config, problem, context) as ex:
            histories = run_searches(config, problem, ex, writer, clock, told)
        status = "complete"
    finally:
        summaries = summaries_of(problem, histories)
        writer.close({"status": status, "searches": [s.to_json() for s in summaries]})
        context.term()
    return DesignOutcome(problem, summaries, writer.root)
