"""Inverse design: search a space of structures for one whose simulated spectrum meets a target.

The configuration (``[target]``, ``[space]``, ``[optimiser]``, ``[executor]``), the targets, the
asynchronous design loop and its executors (inline, threads, Dask; the Dask one needs the ``dask``
extra only when used), the baselines (random search, differential evolution), the latent design
space of a structure VAE and the report. Everything outside this package imports from here.

Each public class and function has an Example, run by the tests in this namespace after the
setup below (an Example that reads a run uses ``run_path``, a closed run such as
``engine.campaign.Campaign``'s Example writes).

Examples:
    >>> import numpy as np
    >>> from engine.candidates import CandidateSet
    >>> energy = np.linspace(1.0, 3.0, 50)
    >>> def simulate(design):  # a toy simulator: one peak whose position follows the first coordinate
    ...     return np.exp(-((energy - 1.0 - 2.0 * design[0]) / 0.1) ** 2)
    >>> pool = np.random.default_rng(0).random((64, 2))  # 64 candidate designs in [0, 1]^2
    >>> candidates = CandidateSet(pool, np.zeros((64, 2), np.int64), (1, 64))
    >>> from engine.policy import RandomPolicy
    >>> history = run_design(RandomPolicy(np.random.default_rng(0)), candidates, InlineExecutor(simulate),
    ...                      budget=8, workers=1)  # a random search of 8 evaluations
    >>> import tempfile
    >>> from pathlib import Path
    >>> folder = Path(tempfile.mkdtemp())  # somewhere to write files
"""

from typing import TYPE_CHECKING

from engine._lazy import lazy_face

if TYPE_CHECKING:  # imported on first use: see engine._lazy
    from engine.dask_cluster import dask_client
    from engine.design._baselines import DE_NAME, DESettings, differential_evolution_search
    from engine.design._config import (
        DesignConfig,
        DesignRunSection,
        DesignStopSection,
        ExecutorSection,
        OptimiserSection,
        SpaceSection,
        StructureSection,
        TargetSection,
        load_design_config,
        parse_design_config,
    )
    from engine.design._dask import DaskExecutor
    from engine.design._latent_space import LatentDesignSpace
    from engine.design._loop import (
        DesignHistory,
        DesignLog,
        Dispatch,
        Executor,
        InlineExecutor,
        Outcome,
        Simulate,
        ThreadExecutor,
        evaluate,
        run_design,
    )
    from engine.design._report import Geometry, SearchSummary, design_figure, summarise
    from engine.design._spheres import geometry_vector, spheres_of
    from engine.design._target import DesignTarget, TargetTolerance, load_target_file, peak_target

__all__ = [
    # configuration
    "DesignConfig",
    "DesignRunSection",
    "TargetSection",
    "StructureSection",
    "SpaceSection",
    "OptimiserSection",
    "ExecutorSection",
    "DesignStopSection",
    "load_design_config",
    "parse_design_config",
    # targets
    "DesignTarget",
    "TargetTolerance",
    "peak_target",
    "load_target_file",
    # the loop and its executors
    "run_design",
    "DesignHistory",
    "DesignLog",
    "Dispatch",
    "Outcome",
    "Simulate",
    "evaluate",
    "Executor",
    "InlineExecutor",
    "ThreadExecutor",
    "DaskExecutor",
    "dask_client",
    # baselines
    "DE_NAME",
    "DESettings",
    "differential_evolution_search",
    # design spaces
    "LatentDesignSpace",
    "geometry_vector",
    "spheres_of",
    # report
    "SearchSummary",
    "summarise",
    "Geometry",
    "design_figure",
]

__getattr__, __dir__ = lazy_face(__name__, __file__)
