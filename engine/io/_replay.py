"""Set up the replay of recorded data: the run configuration and the candidates to choose among."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.candidates import CandidateSet
from engine.config import RunConfig, parse_config, scalariser_table
from engine.io._importers import import_file
from engine.storage import read_candidates


@dataclass(frozen=True)
class ReplaySetup:
    """A replay, ready to run.

    Attributes:
        config: the run configuration (instrument: the ``replay`` driver spawned over ZeroMQ).
        text: that configuration as TOML, stored in the run so that ``dualscope resume`` rebuilds it.
        candidates: the recorded positions ``(m, d)`` the policy chooses among.

    Examples:
        >>> replay_setup(grid).text.splitlines()[0].startswith("# dualscope replay")
        True
    """

    config: RunConfig
    text: str
    candidates: CandidateSet


def replay_setup(
    source: Path,
    policy: str = "random",
    budget: int = 100,
    seed: int = 0,
    output_dir: Path = Path("runs"),
    noise: str = "none",
    acquisition_time_s: float = 0.0,
    channel: str | None = None,
    training: str = "inline",
    refit_every: int = 1,
    band: tuple[float, float] | None = None,
    scalariser: str = "",
) -> ReplaySetup:
    """The configuration and candidates of a replay of ``source``.

    Args:
        source: recorded data: any importable file, dataset or run.
        policy: random, raster, gp-position, dualvae-bo or dkl.
        budget: spectra to measure.
        seed: seed of the policy and of the resampled noise.
        output_dir: where the run goes.
        noise: ``none`` (the recorded counts) or ``poisson`` (resampled).
        acquisition_time_s: dwell to wait per spectrum, in s.
        channel: a Nanonis grid's channel to serve (default: its first).
        training: ``inline`` (default: a replay has no instrument time to hide training behind, so
            each decision waits for its refit) or ``background``.
        refit_every: new measurements between refits.
        band: what a model-based policy maximises: the signal integrated over ``(low, high)`` in the
            spectral units (default: the whole axis).
        scalariser: another scalariser instead, as the body of a TOML inline table
            (``'kind = "peak", low = 1, high = 4'``; the keys of ``[policy.scalariser]``).

    Raises:
        ConfigError: both ``band`` and ``scalariser``, or a malformed or invalid scalariser.

    Returns:
        The setup; a recorded run keeps its own candidates, measured or not, a spectrum image offers
        its recorded positions (on their grid when they form one).

    Raises:
        ConfigError: an unknown policy or noise, or a budget below 1. ImportFailed: an unreadable source.

    Examples:
        >>> setup = replay_setup(grid, policy="raster", budget=10)
        >>> setup.config.policy.name, setup.config.instrument.driver, setup.candidates.grid_shape
        ('raster', 'replay', (4, 5))
    """
    si = import_file(source, channel)
    values = si.spectral_axis.values()
    whole = (float(values.min()), float(values.max()))
    chosen = scalariser_table(band if band is not None or scalariser else whole, scalariser)
    q = json.dumps  # a JSON string (or number, or boolean) is a valid TOML value
    table = ", ".join(f"{key} = {q(value)}" for key, value in chosen.items())
    model_based = policy not in ("random", "raster")
    text = (
        f"# dualscope replay {source} --policy {policy} --budget {budget} --seed {seed} --noise {noise}"
        + (f" --channel {q(channel)}" if channel else "")
        + (f" --training {training} --refit-every {refit_every}" if model_based else "")
        + (f" --band {band[0]!r}:{band[1]!r}" if band is not None else "")
        + (f" --scalariser {q(scalariser)}" if scalariser else "")
        + "\n"
        f"[run]\nname = {q('replay-' + policy)}\noutput_dir = {q(str(output_dir))}\nseed = {seed}\n"
        f'[instrument]\nmode = "spawn"\ndriver = "replay"\nimage_channel = {q(si.image.channel)}\n'
        "timeout_s = 60.0\n"
        f"[instrument.options]\ndataset = {q(str(source.resolve()))}\nnoise = {q(noise)}\n"
        f"acquisition_time_s = {float(acquisition_time_s)!r}\nseed = {seed}\n"
        + (f"channel = {q(channel)}\n" if channel else "")
        + f"[policy]\nname = {q(policy)}\n"
        + (f"training = {q(training)}\nrefit_every = {refit_every}\n" if model_based else "")
        + f"scalariser = {{ {table} }}\n"
        + f"[stop]\nbudget = {budget}\n"
    )
    config = parse_config(text, "replay --scalariser" if scalariser else "replay")
    if not si.complete:  # a recorded run: choose among its own candidates, measured or not
        return ReplaySetup(config, text, read_candidates(source))
    m = si.positions.shape[0]
    nx = int(np.unique(si.positions[:, 0]).size)
    grid = (m // nx, nx) if nx and m % nx == 0 else (1, m)
    return ReplaySetup(config, text, CandidateSet(si.positions.copy(), si.pixels(), grid))
