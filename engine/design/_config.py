"""The ``dualscope design`` configuration: one TOML file parsed into typed, frozen models.

Unknown keys and bad values fail with ``ConfigError`` naming the key and what
is allowed. ``[simulator]`` holds the cluster space's bounds and the simulator's physics and is
validated by the simulator's own options model at the composition root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from engine.config import RunSection, ScalariserSection, _Strict, load_model, parse_model
from engine.design._baselines import DESettings, DEStrategy


class DesignRunSection(RunSection):
    """``[run]`` of a design: the campaign's, named ``design`` by default (the seed also draws the pool).

    Attributes:
        name: the run's name (letters, digits, ``_.-``); the run is ``output_dir/<name>-<time>.zarr``.
        output_dir: where runs go.
        seed: seeds the pool of designs and every search.
        chunk_rows: rows per Zarr chunk.
        figure: write the convergence figure next to the run.

    Examples:
        >>> DesignRunSection().name
        'design'
    """

    name: str = Field("design", pattern=r"^[A-Za-z0-9_.-]+$", description="prefix of the run directory name")


class StructureSection(_Strict):
    """A cluster given explicitly (``kind = "structure"``): its simulated spectrum is the target.

    Attributes:
        arrangement: ``chain``, ``triangle``, ``square`` or ``random``.
        n: number of spheres.
        radius_nm: sphere radius, nm.
        gap_nm: surface-to-surface gap, nm.
        material: ``Au``, ``Ag`` or ``ITO``.
        sn_fraction: Sn doping of ITO (carrier density), 0 to 0.3.

    Examples:
        >>> StructureSection(arrangement="triangle", n=3).n
        3
    """

    arrangement: Literal["chain", "triangle", "square", "random"] = "chain"
    n: int = Field(3, ge=1, le=12)
    radius_nm: float = Field(20.0, gt=0)
    gap_nm: float = Field(4.0, gt=0)
    material: str = Field("Au", description="Au, Ag or ITO")
    sn_fraction: float = Field(0.1, ge=0, le=0.3)


class TargetSection(_Strict):
    """``[target]``: what to aim at.

    Attributes:
        kind: ``peak``, ``file``, ``structure`` or ``scalariser``.
        centre_ev: the peak's centre, eV (``peak``).
        width_ev: its full width at half maximum, eV (``peak``).
        amplitude_nm2: its height, nm² (``peak``; None: the shape only).
        file: a two-column spectrum file, eV and value (``file``).
        match_shape_only: compare shapes only (``file``).
        rel_tol: relative L2 distance that counts as reached.
        peak_tol_ev: peak-position error that counts as reached, eV.
        stop_when_reached: end each search at its first design within tolerance.
        structure: the cluster whose spectrum is the target (``structure``).
        scalariser: what to maximise (``scalariser``).

    Examples:
        >>> TargetSection(kind="peak", centre_ev=2.0, width_ev=0.2).rel_tol > 0
        True
    """

    kind: Literal["peak", "file", "structure", "scalariser"] = Field(
        "peak",
        description="peak: a Lorentzian at centre_ev with FWHM width_ev; file: a two-column spectrum "
        "(eV, value); structure: the spectrum of [target.structure]; scalariser: maximise [target.scalariser]",
    )
    centre_ev: float = Field(2.0, gt=0, description="peak centre, eV (peak)")
    width_ev: float = Field(0.2, gt=0, description="peak FWHM, eV (peak)")
    amplitude_nm2: float | None = Field(
        None, gt=0, description="peak height, nm² (peak); without it only the shape is matched"
    )
    file: Path | None = Field(None, description="two-column .csv/.txt/.npy file, eV and value (file)")
    match_shape_only: bool = Field(True, description="file: match the shape only (best scale factor first)")
    rel_tol: float = Field(0.1, gt=0, description="relative L2 distance that counts as reaching the target")
    peak_tol_ev: float = Field(0.02, gt=0, description="peak-position error that counts as reaching it, eV")
    stop_when_reached: bool = Field(False, description="end each search once the target is reached")
    structure: StructureSection = StructureSection()
    scalariser: ScalariserSection = ScalariserSection()


class SpaceSection(_Strict):
    """``[space]``: which structures are candidates.

    Attributes:
        kind: ``clusters`` (the parametric space of ``[simulator]``) or ``latent`` (a structure VAE's latent space).
        pool: candidate designs drawn as a scrambled Sobol sequence.
        checkpoint: the structure VAE (a ``dualscope train`` directory; ``latent`` only).
        latent_span: the cube covers ``±latent_span`` prior standard deviations of each latent coordinate.
        pixel_nm: the size of a decoded patch's pixel, nm.
        material: the material of the spheres detected in decoded patches.

    Examples:
        >>> SpaceSection().kind, SpaceSection().pool
        ('clusters', 8192)
    """

    kind: Literal["clusters", "latent"] = Field(
        "clusters",
        description="clusters: the parametric cluster space of [simulator]; latent: points of a trained "
        "structure VAE's latent space, decoded to an image and turned into spheres by particle detection",
    )
    pool: int = Field(8192, ge=16, le=1_000_000, description="candidate designs (a scrambled Sobol sample)")
    checkpoint: Path | None = Field(None, description="latent: a `dualscope train` checkpoint directory")
    latent_span: float = Field(2.5, gt=0, description="latent: the cube spans ± this many standard deviations")
    pixel_nm: float = Field(6.25, gt=0, description="latent: nm per pixel of the decoded patches")
    material: str = Field("Au", description="latent: material of the detected spheres")


_DE = DESettings()


class OptimiserSection(_Strict):
    """``[optimiser]``: the Bayesian optimisation and its baselines.

    Attributes:
        acquisition: botorch acquisition of the BO (``ucb`` by default).
        ucb_beta: the fixed β of UCB (``μ + √β σ``).
        initial: random designs before the first GP.
        refit_every: new results between GP refits.
        baselines: searches run after the BO with the same budget: ``random``, ``differential-evolution``.
        de_popsize: differential evolution's population multiplier.
        de_mutation: its differential weight F, or ``[low, high]`` for dithering.
        de_recombination: its crossover probability CR.
        de_strategy: scipy's strategy.

    Examples:
        >>> OptimiserSection().acquisition, OptimiserSection().ucb_beta
        ('ucb', 0.25)
    """

    acquisition: Literal["log-ei", "noisy-log-ei", "ucb", "max-variance", "thompson"] = Field(
        "ucb", description="what picks the next design; ucb scores μ + √β σ of the GP"
    )
    ucb_beta: float = Field(
        0.25,
        gt=0,
        description="ucb: β of μ + √β σ (small: refine near the best designs found; larger: explore; "
        "0.25 came out best in the calls-to-target benchmark)",
    )
    initial: int = Field(16, ge=1, description="random designs before the first GP (about 2-3 × the design dimension)")
    refit_every: int = Field(1, ge=1, description="new results between GP refits")
    baselines: tuple[Literal["random", "differential-evolution"], ...] = Field(
        ("random", "differential-evolution"), description="baselines run with the same budget and simulator"
    )
    de_popsize: int = Field(
        _DE.popsize, ge=2, description="differential evolution: population = de_popsize × dimension"
    )
    de_mutation: float | tuple[float, float] = Field(
        _DE.mutation, description="differential evolution: differential weight F in (0, 2), or [low, high] (dithering)"
    )
    de_recombination: float = Field(
        _DE.recombination, ge=0, le=1, description="differential evolution: crossover probability CR"
    )
    de_strategy: DEStrategy = Field(_DE.strategy, description="differential evolution: scipy's mutation strategy")

    @field_validator("de_mutation")
    @classmethod
    def _mutation_in_range(cls, value: float | tuple[float, float]) -> float | tuple[float, float]:
        bounds = value if isinstance(value, tuple) else (value, value)
        if not 0 < bounds[0] <= bounds[1] < 2:
            raise ValueError(
                f"de_mutation must lie in (0, 2), as a number or [low, high] with low <= high; got {value}"
            )
        return value

    def de_settings(self) -> DESettings:
        """The differential evolution baseline's settings."""
        return DESettings(self.de_popsize, self.de_mutation, self.de_recombination, self.de_strategy)


class ExecutorSection(_Strict):
    """``[executor]``: where the simulator runs.

    Attributes:
        kind: ``inline``, ``threads``, ``servers`` (``dualscope serve design-cda`` processes) or ``dask``.
        workers: evaluations in flight at once.
        scheduler: a Dask scheduler ``tcp://HOST:8786`` (empty: a loopback LocalCluster).
        timeout_s: longest wait for one evaluation on a server, s.

    Examples:
        >>> ExecutorSection(kind="dask", workers=4).workers
        4
    """

    kind: Literal["inline", "threads", "servers", "dask"] = Field(
        "threads",
        description="inline: one at a time in this process; threads: a thread pool; servers: a pool of "
        "`dualscope serve design-cda` processes over ZeroMQ; dask: a Dask cluster (scheduler, or a LocalCluster)",
    )
    workers: int = Field(4, ge=1, le=1024, description="evaluations in flight (threads, servers or local Dask workers)")
    scheduler: str = Field("", description="dask: tcp://HOST:8786 of a running scheduler (empty: a LocalCluster)")
    timeout_s: float = Field(60.0, gt=0, description="servers: seconds to wait for one evaluation")


class DesignStopSection(_Strict):
    """``[stop]``: the budget of each search.

    Attributes:
        budget: successful simulator evaluations per search.

    Examples:
        >>> DesignStopSection(budget=60).budget
        60
    """

    budget: int = Field(100, ge=1, description="successful simulator evaluations per search")


class DesignConfig(_Strict):
    """The whole ``dualscope design`` file (every table has defaults; see ``parse_design_config``).

    Attributes:
        run: ``[run]``: name, output folder, seed, chunk rows, figure.
        target: ``[target]``: what to aim at.
        space: ``[space]``: the candidate structures.
        simulator: ``[simulator]``: the coupled-dipole simulator's options (validated by the simulator).
        optimiser: ``[optimiser]``: the Bayesian optimisation and its baselines.
        executor: ``[executor]``: where the simulator runs.
        stop: ``[stop]``: the budget of each search.

    Examples:
        >>> config = DesignConfig()
        >>> config.target.kind, config.stop.budget, config.executor.kind
        ('peak', 100, 'threads')
    """

    run: DesignRunSection = DesignRunSection()
    target: TargetSection = TargetSection()
    space: SpaceSection = SpaceSection()
    simulator: dict[str, Any] = Field(default_factory=dict, description="cluster bounds and physics")
    optimiser: OptimiserSection = OptimiserSection()
    executor: ExecutorSection = ExecutorSection()
    stop: DesignStopSection = DesignStopSection()


def parse_design_config(text: str, source: str = "<design config>") -> DesignConfig:
    r"""Parse TOML ``text`` into a ``DesignConfig``; errors name the key and the allowed values.

    Args:
        text: TOML.
        source: where the text came from, for error messages.

    Returns:
        The validated configuration.

    Raises:
        ConfigError: bad TOML, an unknown key or a value out of range (named).

    Examples:
        >>> config = parse_design_config('''
        ... [target]
        ... kind = "peak"
        ... centre_ev = 2.2
        ... width_ev = 0.3
        ... [stop]
        ... budget = 40
        ... ''')
        >>> config.target.kind
        'peak'
        >>> try:
        ...     parse_design_config("[target]\nkind = 'peek'")
        ... except Exception as exc:
        ...     print(type(exc).__name__)
        ConfigError
    """
    return parse_model(text, DesignConfig, source)


def load_design_config(path: Path) -> tuple[DesignConfig, str]:
    r"""Read and parse the design TOML at ``path``; returns the config and its text (stored in the run).

    Args:
        path: a TOML file (see ``examples/design.toml``).

    Returns:
        The validated configuration and the file's text.

    Raises:
        ConfigError: an unreadable file, bad TOML, an unknown key or a value out of range (named).

    Examples:
        >>> path = folder / "design.toml"
        >>> _ = path.write_text("[stop]\nbudget = 30\n")
        >>> config, text = load_design_config(path)
        >>> config.stop.budget, text.startswith("[stop]")
        (30, True)
    """
    return load_model(path, DesignConfig)
