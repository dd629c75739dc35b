"""Model-free policies: ``random`` and ``raster``.

They are the baselines every model-based policy is compared with, and they
implement the same ``Policy`` protocol.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.candidates import CandidateSet
from engine.decisions import Proposal
from engine.errors import ConfigError
from engine.rng_state import rng_state, set_rng_state


class RandomPolicy:
    """Uniformly random choice among available candidates, from an injected RNG.

    Args:
        rng: the run's random generator (same seed, same choices).

    Examples:
        >>> policy = RandomPolicy(np.random.default_rng(0))
        >>> proposal = policy.propose(candidates, 3)
        >>> proposal.indices.shape, bool(np.isnan(proposal.acquisition_values).all())
        ((3,), True)
    """

    name = "random"

    def __init__(self, rng: np.random.Generator):
        self._rng = rng

    def propose(self, candidates: CandidateSet, q: int) -> Proposal:
        """Pick ``min(q, available)`` distinct candidates at random."""
        free = candidates.available()
        k = min(q, free.size)
        chosen = self._rng.choice(free, size=k, replace=False).astype(np.int64)
        return Proposal(indices=chosen, acquisition_values=np.full(k, np.nan))

    def tell(self, indices: NDArray[np.int64], spectra: NDArray[np.float32]) -> None:
        """Random search learns nothing."""

    def state(self) -> dict[str, Any]:
        """The RNG state (see ``engine.protocols.Resumable``)."""
        return {"rng": rng_state(self._rng)}

    def restore(self, state: Mapping[str, Any], told: list[tuple[NDArray[np.int64], NDArray[np.float32]]]) -> None:
        """Put the RNG back; random search needs nothing of what was measured."""
        set_rng_state(self._rng, state["rng"])


class RasterPolicy:
    """Serpentine (boustrophedon) raster over the candidate grid.

    Rows are scanned alternately left-to-right and right-to-left, which keeps
    every probe move short, as an operator would scan by hand.

    Examples:
        >>> from engine.candidates import CandidateSet
        >>> grid = CandidateSet(np.zeros((6, 2)), np.zeros((6, 2), np.int64), (2, 3))
        >>> policy = RasterPolicy()
        >>> order = []
        >>> for _ in range(6):
        ...     p = policy.propose(grid, 1)
        ...     grid.mark_measured(p.indices)
        ...     order += p.indices.tolist()
        >>> order  # serpentine: the second row right to left
        [0, 1, 2, 5, 4, 3]
    """

    name = "raster"

    def __init__(self) -> None:
        self._order: NDArray[np.int64] | None = None
        self._of: CandidateSet | None = None  # the candidate set the order and cursor belong to
        self._cursor = 0  # every candidate before it in the order is measured (measured is for good)

    def _serpentine(self, grid_shape: tuple[int, int]) -> NDArray[np.int64]:
        rows, cols = grid_shape
        order = np.arange(rows * cols, dtype=np.int64).reshape(rows, cols)
        order[1::2] = order[1::2, ::-1]
        return order.ravel()

    def propose(self, candidates: CandidateSet, q: int) -> Proposal:
        """The next ``q`` available candidates in serpentine order.

        A candidate released after a failed measurement is proposed again first; only measured ones
        are passed for good (a cursor), so each step looks at a few candidates, not all of them.
        """
        if self._order is None or self._of is not candidates or self._order.size != len(candidates):
            self._order, self._of, self._cursor = self._serpentine(candidates.grid_shape), candidates, 0
        order, measured, pending = self._order, candidates.measured, candidates.pending
        if q == 1:  # the common case, element by element: a few µs, where a window of arrays costs tens
            c = self._cursor
            while c < order.size and measured[order[c]]:
                c += 1
            self._cursor = c
            while c < order.size and (pending[order[c]] or measured[order[c]]):
                c += 1
            chosen = order[c : c + 1]
            return Proposal(indices=chosen, acquisition_values=np.full(chosen.size, np.nan))
        size = max(4 * q, 64)
        while True:
            window = order[self._cursor : self._cursor + size]
            done = measured[window]
            lead = int(np.argmin(done)) if not done.all() else window.size
            self._cursor += lead
            free = window[lead:][~(done[lead:] | pending[window[lead:]])]
            if free.size >= q or self._cursor + size >= order.size:
                break
            size *= 4  # few free ones near the cursor (many pending): look further
        if free.size < q:  # the window reached the end of the order
            rest = order[self._cursor :]
            free = rest[~(measured[rest] | pending[rest])]
        chosen = free[:q]
        return Proposal(indices=chosen, acquisition_values=np.full(chosen.size, np.nan))

    def tell(self, indices: NDArray[np.int64], spectra: NDArray[np.float32]) -> None:
        """A raster learns nothing."""

    def state(self) -> dict[str, Any]:
        """Nothing: the order follows from the candidates alone."""
        return {}

    def restore(self, state: Mapping[str, Any], told: list[tuple[NDArray[np.int64], NDArray[np.float32]]]) -> None:
        """Nothing to restore: the measured candidates are marked in the candidate set."""


POLICY_NAMES = ("random", "raster")
"""Policy names the configuration accepts."""


def make_policy(name: str, rng: np.random.Generator) -> RandomPolicy | RasterPolicy:
    """Build a model-free policy by name (one of ``POLICY_NAMES``).

    Args:
        name: ``random`` or ``raster``.
        rng: seeds ``random``.

    Returns:
        The policy.

    Raises:
        ConfigError: another name (the model-based policies are built by ``build_policy``).

    Examples:
        >>> make_policy("raster", np.random.default_rng(0)).name
        'raster'
    """
    if name == "random":
        return RandomPolicy(rng)
    if name == "raster":
        return RasterPolicy()
    raise ConfigError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")
