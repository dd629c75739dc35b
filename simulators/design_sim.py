"""Simulators of candidate structures for inverse design, as picklable callables and as a driver.

* :class:`ClusterSimulator`: a design ``u ∈ [0, 1]^6`` of :class:`~simulators.design_space.ClusterSpace`
  → its dark-field scattering cross-section ``(c,)`` in nm² (coupled dipoles).
* :class:`GeometrySimulator`: an explicit geometry (sphere centres and radii, as a flat vector
  ``(3k,)`` NaN-padded) → the same spectrum; the latent design space sends these.
* :class:`DieOnce`: a fault wrapper whose first evaluation (across processes) kills its worker.
* :class:`DesignDriver`: the cluster simulator behind the instrument :class:`~instruments.driver.Driver`
  protocol (the six design coordinates are its axes), so ``dualscope serve design-cda`` puts it
  behind ZeroMQ and a pool of such servers evaluates designs in parallel.

Every simulator here may add a fixed ``delay_s`` per call (a sleep, not CPU work), to emulate a
slow simulator when measuring how evaluations scale out.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field

from engine.design import spheres_of
from engine.errors import AcquisitionAborted, BadRequest, ConfigError
from engine.protocols import Clock
from engine.types import JSON, Axis, Image, InstrumentDescription, SpectralAxis, SpectrumBatch
from simulators.cda import Cluster, dark_field_spectrum
from simulators.design_space import ARRANGEMENTS, ClusterSpace
from simulators.dielectric import MATERIALS, ito


class ClusterSimOptions(BaseModel):
    """The cluster design space's bounds and the simulator's physics (``[simulator]`` of a design TOML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_min: int = Field(1, ge=1, description="fewest spheres in a cluster")
    n_max: int = Field(6, ge=1, le=12, description="most spheres in a cluster")
    radius_min_nm: float = Field(5.0, gt=0, description="smallest sphere radius, nm")
    radius_max_nm: float = Field(40.0, gt=0, description="largest sphere radius, nm")
    gap_min_nm: float = Field(1.0, gt=0, description="smallest surface gap between neighbours, nm")
    gap_max_nm: float = Field(20.0, gt=0, description="largest surface gap between neighbours, nm")
    sn_min: float = Field(0.02, ge=0, le=0.3, description="least Sn fraction of ITO (carrier density)")
    sn_max: float = Field(0.15, ge=0, le=0.3, description="most Sn fraction of ITO")
    arrangements: tuple[str, ...] = Field(ARRANGEMENTS, min_length=1, description="chain, triangle, square, random")
    materials: tuple[str, ...] = Field(("Au", "Ag", "ITO"), min_length=1, description="Au, Ag, ITO")
    energy_min_ev: float = Field(1.2, gt=0, description="first photon energy of the spectra, eV")
    energy_max_ev: float = Field(3.2, gt=0, description="last photon energy of the spectra, eV")
    channels: int = Field(120, ge=8, le=4096, description="spectral channels")
    n_medium: float = Field(1.0, gt=0, description="refractive index of the surrounding medium")
    delay_s: float = Field(0.0, ge=0, description="fixed extra seconds per evaluation (a sleep: a slow simulator)")

    def space(self) -> ClusterSpace:
        """The :class:`ClusterSpace` these bounds describe (raises ``ValueError`` on empty ranges)."""
        for name, lo, hi in (
            ("n", self.n_min, self.n_max),
            ("radius", self.radius_min_nm, self.radius_max_nm),
            ("gap", self.gap_min_nm, self.gap_max_nm),
            ("sn", self.sn_min, self.sn_max),
            ("energy", self.energy_min_ev, self.energy_max_ev),
        ):
            if hi < lo:
                raise ConfigError(f"{name}: the maximum {hi:g} is below the minimum {lo:g}")
        unknown = [a for a in self.arrangements if a not in ARRANGEMENTS] + [
            m for m in self.materials if m != "ITO" and m not in MATERIALS
        ]
        if unknown:
            raise ConfigError(f"unknown arrangement or material {unknown}; arrangements {ARRANGEMENTS}, "
                             f"materials ITO, {', '.join(sorted(MATERIALS))}")  # fmt: skip
        return ClusterSpace(
            n_range=(self.n_min, self.n_max),
            radius_range_nm=(self.radius_min_nm, self.radius_max_nm),
            gap_range_nm=(self.gap_min_nm, self.gap_max_nm),
            sn_range=(self.sn_min, self.sn_max),
            arrangements=tuple(self.arrangements),
            materials=tuple(self.materials),
        )

    def energy_ev(self) -> NDArray[np.float64]:
        """Photon energies ``(channels,)`` in eV."""
        return np.linspace(self.energy_min_ev, self.energy_max_ev, self.channels)

    def spectral_axis(self) -> SpectralAxis:
        """The spectra's calibration (photon energy, eV)."""
        e = self.energy_ev()
        return SpectralAxis("photon_energy", "eV", float(e[0]), float(e[1] - e[0]), e.size)


@dataclass(frozen=True)
class ClusterSimulator:
    """Design ``u (6,)`` in ``[0, 1]`` → dark-field scattering cross-section ``(c,)`` in nm². Picklable."""

    options: ClusterSimOptions
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)
    _space: ClusterSpace = field(init=False, repr=False, compare=False)
    _energy_ev: NDArray[np.float64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_space", self.options.space())  # once, not per evaluation
        object.__setattr__(self, "_energy_ev", self.options.energy_ev())

    def __call__(self, u: NDArray[np.float64]) -> NDArray[np.float64]:
        """The spectrum of ``space.decode(u)`` on the options' energy axis (after the fixed delay)."""
        if self.options.delay_s > 0:
            self.sleep(self.options.delay_s)
        design = self._space.decode(np.asarray(u, dtype=np.float64))
        return design.spectrum(self._energy_ev, self.options.n_medium**2)


@dataclass(frozen=True)
class GeometrySimulator:
    """Geometry vector ``(3k,)`` (x, y, radius in nm per sphere; NaN rows unused) → spectrum ``(c,)`` nm².

    All spheres are of ``material`` in a medium of index ``options.n_medium``. Picklable.
    """

    options: ClusterSimOptions
    material: str = "Au"
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False)

    def __call__(self, geometry: NDArray[np.float64]) -> NDArray[np.float64]:
        """The spectrum of the spheres in ``geometry``; raises ``ValueError`` if it holds none."""
        if self.options.delay_s > 0:
            self.sleep(self.options.delay_s)
        xy, radii = spheres_of(geometry)
        if radii.size == 0:
            raise ConfigError("the structure holds no particle")
        eps = ito(0.1) if self.material == "ITO" else MATERIALS[self.material]
        centres = np.column_stack([xy, np.zeros(radii.size)])
        cluster = Cluster(centres, radii, [eps] * radii.size, self.options.n_medium**2)
        return np.asarray(dark_field_spectrum(cluster, self.options.energy_ev()), dtype=np.float64)


@dataclass(frozen=True)
class DieOnce:
    """Fault wrapper: the first call anywhere (any process) kills its worker half-way, later calls pass.

    Which call is first is decided by creating ``marker`` exclusively (atomic across processes).
    ``mode = "exit"`` ends the worker process with ``os._exit`` (a Dask worker or a simulator server
    dying mid-evaluation); ``"raise"`` raises ``RuntimeError`` (an in-process stand-in).
    """

    simulate: Callable[[NDArray[np.float64]], NDArray[np.float64]]
    marker: str
    mode: str = "exit"
    after_s: float = 0.05

    def __call__(self, u: NDArray[np.float64]) -> NDArray[np.float64]:
        """Die the first time, else simulate."""
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return self.simulate(u)
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        time.sleep(self.after_s)
        if self.mode == "exit":
            os._exit(70)
        raise RuntimeError("the worker died mid-evaluation")


class DesignDriver:
    """The cluster simulator as an instrument: axes are the six design coordinates in ``[0, 1]``.

    ``measure`` takes designs ``(n, 6)`` and returns their cross-sections ``(n, c)`` (nm²); it has no
    image channel. Serve it with ``dualscope serve design-cda``.
    """

    def __init__(self, options: ClusterSimOptions, clock: Clock):
        self._options, self._clock = options, clock
        self._simulate = ClusterSimulator(options)
        self._space = options.space()
        self._evaluations = 0
        self._abort = threading.Event()

    def describe(self) -> InstrumentDescription:
        """Six unit axes (arrangement, n, radius, gap, material, Sn fraction) and the photon-energy axis."""
        return InstrumentDescription(
            name="dualscope-design-cda",
            axes=tuple(Axis(name, "1", 0.0, 1.0) for name in self._space.NAMES),
            spectral_axis=self._options.spectral_axis(),
            image_channels=(),
            max_batch=256,
            extra={"simulator": "simulators.design_sim", "options": self._options.model_dump(mode="json")},
        )

    def acquire_image(self, channel: str) -> Image:
        """A design simulator has no image."""
        raise BadRequest(f"the design simulator has no image channel {channel!r} (it has none)")

    def measure(self, positions: NDArray[np.float64]) -> SpectrumBatch:
        """Spectra ``(n, c)`` of the designs ``positions (n, 6)``."""
        self._abort.clear()
        spectra = np.empty((positions.shape[0], self._options.channels), dtype=np.float32)
        stamps = np.empty(positions.shape[0])
        for i, u in enumerate(positions):
            if self._abort.is_set():
                raise AcquisitionAborted("acquisition aborted by request")
            spectra[i] = self._simulate(u)
            stamps[i] = self._clock.time()
            self._evaluations += 1
        return SpectrumBatch(spectra, stamps, self._options.delay_s)

    def status(self) -> Mapping[str, JSON]:
        """Evaluations done so far."""
        return {"evaluations": self._evaluations}

    def abort(self) -> None:
        """Stop before the next design of the batch."""
        self._abort.set()


def design_cda_driver(options: ClusterSimOptions, clock: Clock) -> DesignDriver:
    """Build the design driver (checks the bounds)."""
    try:
        options.space()
    except ValueError as exc:
        raise ConfigError(f"design-cda options: {exc}") from exc
    return DesignDriver(options, clock)
