"""``Experiment``: a campaign from Python (a notebook, a script), on the same path as ``dualscope run``.

Two ways to use it:

* **dualscope drives the instrument** (the simulator, a replay, the Nion driver, any served driver):
  ``Experiment.from_toml("examples/demo.toml").run(progress=True)``, then ``.results`` is the run as
  an ``xarray.Dataset``. ``dualscope run`` is this call with a progress display and a printed summary.
* **your code drives the microscope** (ask/tell, as Ax's ``get_next_trials`` / ``complete_trial``):
  ``Experiment.ask_tell(image, spectral_axis, config)`` gives an experiment whose ``suggest()`` returns
  the positions to measure next and whose ``observe(spectra)`` records what your acquisition code
  measured there. Behind it runs the same campaign loop (policy, safety limits, crash-safe run,
  stop rules); the "instrument" it commands is you.

This module is part of the composition root (it opens instruments), so it lives beside the CLI; the
``engine`` package exposes ``engine.Experiment``.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import tomli_w
import zmq
from numpy.typing import NDArray

from engine.campaign import CampaignResult, OperatorStop, StepReport
from engine.candidates import CandidateSet
from engine.clock import SystemClock
from engine.config import RunConfig, load_config, validate_model
from engine.errors import ConfigError, DeviceFault
from engine.policy import AcquisitionFactory, PythonParts, Scalariser
from engine.protocols import Clock, Instrument, PhaseProgress
from engine.types import Axis, Image, InstrumentDescription, Measurement, SpectralAxis

if TYPE_CHECKING:
    import xarray

    from engine.cli.wiring import RunOutcome

OnStep = Callable[[StepReport], None]


def config_toml(config: RunConfig) -> str:
    """The TOML text of ``config`` (stored in the run, so ``dualscope resume`` rebuilds the same campaign).

    Args:
        config: a validated configuration.

    Returns:
        TOML that ``engine.config.parse_config`` reads back to an equal configuration.

    Examples:
        >>> from engine.config import parse_config
        >>> config = RunConfig.model_validate({"policy": {"name": "gp-position"}, "stop": {"budget": 30}})
        >>> parse_config(config_toml(config)) == config
        True
    """
    return "# written by engine.Experiment\n" + tomli_w.dumps(config.model_dump(mode="json", exclude_none=True))


class Experiment:
    """One campaign, configured like a TOML file, run from Python.

    Args:
        config: a ``RunConfig``, or the same tables as a mapping (``{"policy": {"name": "gp-position"}}``):
            unknown keys are refused with the key named, as in a file.
        config_text: the TOML the configuration came from (stored in the run); default: written from it.
        candidates: probe positions to choose from (default: a grid over the structural image).
        acquisition: your own botorch acquisition instead of ``policy.acquisition``: a function
            ``(model, context) -> AcquisitionFunction`` (``engine.policy.AcquisitionFactory``); the model's
            inputs are candidate indices, ``context`` has ``best_f``, ``observed``, ``pending``, ``beta``.
        scalariser: your own property instead of ``[policy.scalariser]``: a function
            ``(spectra (n, c), axis (c,)) -> (n,)`` or an ``engine.policy.Scalariser``.

    Examples:
        >>> exp = Experiment({"instrument": {"mode": "local", "driver": "synthetic",
        ...                                  "options": {"image_pixels": 32, "n_channels": 32}},
        ...                   "policy": {"name": "random"}, "stop": {"budget": 5},
        ...                   "run": {"output_dir": str(folder), "figure": False}})
        >>> exp.run().n_recorded
        5
        >>> exp.results.sizes["measurement"]
        5
    """

    def __init__(
        self,
        config: RunConfig | Mapping[str, Any],
        config_text: str | None = None,
        *,
        candidates: CandidateSet | None = None,
        acquisition: AcquisitionFactory | None = None,
        scalariser: Callable[[NDArray[Any], NDArray[np.float64]], NDArray[Any]] | Scalariser | None = None,
    ):
        self.config = config if isinstance(config, RunConfig) else validate_model(dict(config), RunConfig, "config")
        self.python = PythonParts(acquisition, scalariser)
        self.config_text = config_toml(self.config) if config_text is None else config_text
        self.candidates = candidates
        self.outcome: RunOutcome | None = None
        self._stepping: _Stepping | None = None

    @classmethod
    def from_toml(cls, path: str | Path, *, defaults: bool = False) -> Experiment:
        """The experiment a TOML file describes (``defaults``: missing tables take their defaults).

        Raises:
            ConfigError: unreadable, invalid (the key named), or missing a required table.
        """
        config, text = load_config(Path(path), defaults=defaults)
        return cls(config, text)

    # ------------------------------------------------------------------ dualscope drives the instrument
    def run(
        self,
        *,
        progress: bool = False,
        on_step: OnStep | None = None,
        on_phase: PhaseProgress | None = None,
        stop: OperatorStop | None = None,
        context: zmq.Context[Any] | None = None,
        clock: Clock | None = None,
    ) -> CampaignResult:
        """Open the instrument, run the campaign to its stop rule, close the run; returns what it did.

        Args:
            progress: show progress bars (rich: a terminal or a notebook): one per start-up phase, then
                the measurements.
            on_step: told after every step (what was decided, measured and recorded).
            on_phase: told how long start-up phases go (the dual VAE's pre-training).
            stop: ``stop.request()`` (from another thread) ends the campaign after the current measurement.
            context: the ZeroMQ context (default: a new one, terminated at the end).
            clock: the time source (default: the system's).

        Returns:
            The campaign's result (spectra recorded, why it stopped); the run is at ``run_path``.

        Raises:
            ConfigError: the configuration cannot work (an unknown driver, a missing image channel, ...).
            Exception: the campaign stopped on an error; everything measured before it is recorded.
        """
        from engine.cli.wiring import checked_instrument

        config, clock = self.config, clock or SystemClock()
        ctx = context or zmq.Context()
        stop = stop or OperatorStop()
        try:
            with (
                checked_instrument(config, ctx, clock) as instrument,
                _Display(progress, config.stop.budget, stop, clock, on_step, on_phase) as (step, phase),
            ):
                self.execute(instrument, clock, stop, step, phase, ctx)
        finally:
            if context is None:
                ctx.term()
        assert self.outcome is not None
        if self.outcome.error is not None:
            raise self.outcome.error
        assert self.outcome.result is not None
        return self.outcome.result

    def step(self) -> StepReport | None:
        """One more measurement: decide, measure, record; returns what it did (``None`` once the campaign is over).

        The first call opens the instrument and starts the campaign (on a thread of its own, which
        waits between calls); ``close()`` (or leaving a ``with`` block) ends it and closes the run.

        Raises:
            Exception: the campaign stopped on an error (everything measured before it is recorded).

        Examples:
            >>> with Experiment(tables) as exp:
            ...     first, second = exp.step(), exp.step()
            >>> second.n_recorded
            2
        """
        if self._stepping is None:
            self._stepping = _Stepping(self)
        return self._stepping.next()

    def close(self) -> None:
        """End a campaign run by ``step()`` after the current measurement, and close its run (idempotent)."""
        if self._stepping is not None:
            self._stepping.close()

    def __enter__(self) -> Experiment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def execute(
        self,
        instrument: Instrument,
        clock: Clock,
        stop: OperatorStop,
        on_step: OnStep | None,
        on_phase: PhaseProgress | None,
        context: zmq.Context[Any] | None,
        on_open: Callable[[Path], None] | None = None,
    ) -> RunOutcome:
        """Run the campaign on an open ``instrument`` (what ``run`` and ``dualscope run`` both call).

        The run is closed whatever happens; an error is in the outcome, not raised. ``on_open`` gets
        the run's path as soon as it exists (the CLI's ``--view`` serves it from then on).
        """
        from engine.cli.wiring import execute_run

        python = self.python if self.python.names() else None
        self.outcome = execute_run(
            self.config, self.config_text, instrument, clock, stop, on_step, self.candidates, context, on_phase, python,
            on_open,
        )  # fmt: skip
        return self.outcome

    @property
    def run_path(self) -> Path:
        """Where the last run is (``runs/<name>-<timestamp>.zarr``).

        Raises:
            ConfigError: nothing has run yet.
        """
        if self.outcome is None:
            raise ConfigError("this experiment has not run yet: call run() (or suggest() and observe()) first")
        return self.outcome.run_path

    @property
    def results(self) -> xarray.Dataset:
        """The last run as an ``xarray.Dataset`` (``engine.io.run_dataset``): spectra, positions, decisions."""
        from engine.io import run_dataset

        return run_dataset(self.run_path)

    # ------------------------------------------------------------------ your code drives the microscope
    @classmethod
    def ask_tell(
        cls,
        image: Image,
        spectral_axis: SpectralAxis,
        config: RunConfig | Mapping[str, Any] | None = None,
        *,
        name: str = "your microscope",
        acquisition_time_s: float = 0.0,
        clock: Clock | None = None,
        acquisition: AcquisitionFactory | None = None,
        scalariser: Callable[[NDArray[Any], NDArray[np.float64]], NDArray[Any]] | Scalariser | None = None,
    ) -> AskTell:
        """An experiment whose measurements your own acquisition code makes: ``suggest()``, then ``observe()``.

        Args:
            image: your structural image (calibrated axes, e.g. ``x``/``y`` in nm); candidates are a grid over it.
            spectral_axis: the calibration of the spectra you will observe.
            config: the campaign's tables (``[policy]``, ``[stop]``, ``[safety]``, ``[run]``...);
                ``[instrument]`` is ignored: the instrument is you.
            name: recorded as the instrument's name.
            acquisition_time_s: your dwell per spectrum, recorded with each measurement.
            clock: the time source of the run and of each observation's timestamp (default: the system's).
            acquisition: your own botorch acquisition (see ``Experiment``).
            scalariser: your own property (see ``Experiment``).

        Returns:
            An ``AskTell`` (use it as a context manager, or call ``close()``).
        """
        exp = cls(config or {}, acquisition=acquisition, scalariser=scalariser)
        return AskTell(exp, _You(image, spectral_axis, name, acquisition_time_s), clock or SystemClock())


class _Stepping:
    """A campaign on its own thread that waits after each step until ``next()`` asks for another."""

    def __init__(self, experiment: Experiment):
        self._stop = OperatorStop()
        self._go = threading.Semaphore(0)
        self._reports: queue.Queue[StepReport | None] = queue.Queue()
        self._error: BaseException | None = None
        self._over = False

        def hold(report: StepReport) -> None:
            self._reports.put(report)
            self._go.acquire()  # until the caller asks for the next step, or closes

        def campaign() -> None:
            try:
                experiment.run(on_step=hold, stop=self._stop)
            except BaseException as exc:  # raised by next()
                self._error = exc
            finally:
                self._reports.put(None)

        self._thread = threading.Thread(target=campaign, name="dualscope-steps", daemon=True)
        self._thread.start()
        self._started = False

    def next(self) -> StepReport | None:
        if self._over:
            return None
        if self._started:
            self._go.release()
        self._started = True
        report = self._reports.get()
        if report is None:
            self._over = True
            self._thread.join()
            if self._error is not None:
                raise self._error
        return report

    def close(self) -> None:
        if self._over:
            return
        self._stop.request()
        self._go.release()
        while self._reports.get() is not None:  # a step already under way when the stop came
            self._go.release()
        self._thread.join()
        self._over = True


class _Display:
    """Progress bars around a campaign when asked for (``rich``); otherwise just the caller's callbacks."""

    def __init__(
        self,
        progress: bool,
        budget: int,
        stop: OperatorStop,
        clock: Clock,
        on_step: OnStep | None,
        on_phase: PhaseProgress | None,
    ):
        self._progress, self._budget, self._stop, self._clock = progress, budget, stop, clock
        self._on_step, self._on_phase = on_step, on_phase
        self._bars: Any = None

    def __enter__(self) -> tuple[OnStep | None, PhaseProgress | None]:
        if not self._progress:
            return self._on_step, self._on_phase
        from rich.progress import Progress

        from engine.cli.console import CampaignBars, campaign_columns

        self._bars = Progress(*campaign_columns())
        self._bars.__enter__()
        bars = CampaignBars(self._bars, self._stop.event, self._budget, 0, self._clock)

        def step(report: StepReport) -> None:
            bars.step(report)
            if self._on_step is not None:
                self._on_step(report)

        def phase(what: str, done: int, total: int) -> None:
            bars.phase(what, done, total)
            if self._on_phase is not None:
                self._on_phase(what, done, total)

        return step, phase

    def __exit__(self, *exc: object) -> None:
        if self._bars is not None:
            self._bars.__exit__(None, None, None)


@dataclass(frozen=True)
class _Ask:
    positions: NDArray[np.float64]
    request_id: str


_DONE = _Ask(np.empty((0, 2)), "")
"""Put on the asks queue when the campaign has ended: nothing more to suggest."""


class _You:
    """The ``Instrument`` an ask/tell campaign commands: its ``measure`` waits for ``AskTell.observe``."""

    def __init__(self, image: Image, spectral_axis: SpectralAxis, name: str, dwell_s: float):
        self._image, self._dwell = image, dwell_s
        x, y = image.x_axis, image.y_axis
        h, w = np.asarray(image.data).shape
        ends = [(a, a.offset, a.offset + a.scale * (n - 1)) for a, n in ((x, w), (y, h))]
        axes = tuple(Axis(a.name, a.units, min(lo, hi), max(lo, hi)) for a, lo, hi in ends)
        self.description = InstrumentDescription(name, axes, spectral_axis, (image.channel,))
        self.asks: queue.Queue[_Ask] = queue.Queue()
        self.tells: queue.Queue[Measurement | BaseException] = queue.Queue()

    def describe(self) -> InstrumentDescription:
        return self.description

    def acquire_image(self, channel: str) -> Image:
        return self._image

    def measure(self, positions: NDArray[np.float64], request_id: str | None = None) -> Measurement:
        self.asks.put(_Ask(np.array(positions, dtype=np.float64), request_id or ""))
        told = self.tells.get()
        if isinstance(told, BaseException):
            raise told
        return told

    def status(self) -> Mapping[str, Any]:
        return {"driven_by": "you"}

    def abort(self) -> None:
        """Nothing to abort: your code acquires."""

    def close(self) -> None:
        """Nothing to release."""


class AskTell:
    """An ask/tell experiment: ``suggest()`` the next positions, ``observe()`` what you measured there.

    The campaign loop runs on a thread of its own and waits for you between the two calls; every
    observation is durable in the run when ``observe`` returns. ``close()`` (or leaving the ``with``
    block) ends it: a suggestion never observed is recorded as missing, the run is closed.

    Examples:
        >>> with Experiment.ask_tell(image, axis, {"policy": {"name": "gp-position", "initial": 3},
        ...                                        "stop": {"budget": 6},
        ...                                        "run": {"output_dir": str(folder), "figure": False}}) as exp:
        ...     while (positions := exp.suggest()).size:
        ...         exp.observe(my_microscope(positions))  # your acquisition code
        >>> exp.results.sizes["measurement"]
        6
    """

    def __init__(self, experiment: Experiment, you: _You, clock: Clock):
        self.experiment, self._you, self._clock = experiment, you, clock
        self._stop = OperatorStop()
        self._pending: _Ask | None = None
        self._recorded = threading.Semaphore(0)
        self._result: CampaignResult | None = None
        self._error: BaseException | None = None
        self._thread: threading.Thread | None = None
        self._over = False

    def __enter__(self) -> AskTell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start(self) -> None:
        from engine.storage import ensure_output_dir

        exp = self.experiment
        ensure_output_dir(exp.config.run.output_dir)

        def campaign() -> None:
            try:
                outcome = exp.execute(
                    self._you, self._clock, self._stop, lambda _: self._recorded.release(), None, None
                )
                self._result, self._error = outcome.result, outcome.error
            except BaseException as exc:  # a configuration that cannot work: raised by suggest()
                self._error = exc
            finally:
                self._you.asks.put(_DONE)

        self._thread = threading.Thread(target=campaign, name="dualscope-ask-tell", daemon=True)
        self._thread.start()

    def suggest(self) -> NDArray[np.float64]:
        """The positions ``(q, d)`` to measure next (the axes' units); an empty array when the campaign is over.

        Blocks while the policy decides (and, the first time, while the dual VAE pre-trains).

        Raises:
            ConfigError: a suggestion is still waiting for its observation.
            Exception: the campaign stopped on an error (everything observed before is recorded).
        """
        if self._pending is not None:
            raise ConfigError("observe() the positions suggested last before asking for more")
        if self._over:
            return np.empty((0, len(self._you.description.axes)))
        if self._thread is None:
            self._start()
        ask = self._you.asks.get()
        if ask is _DONE:
            self._over = True
            assert self._thread is not None
            self._thread.join()
            if self._error is not None:
                raise self._error
            return np.empty((0, len(self._you.description.axes)))
        self._pending = ask
        return ask.positions.copy()

    def observe(self, spectra: NDArray[Any], positions: NDArray[Any] | None = None) -> None:
        """Record the spectra ``(q, c)`` measured at the positions ``suggest()`` gave (durable when this returns).

        Args:
            spectra: one spectrum per suggested position, on the ``spectral_axis`` given (NaN is refused).
            positions: where they were measured, if not exactly where suggested (e.g. after your own drift
                correction); same shape as the suggestion.

        Raises:
            ConfigError: nothing was suggested, or the shapes do not match (named).
        """
        ask = self._pending
        if ask is None:
            raise ConfigError("nothing to observe: call suggest() first")
        data = np.asarray(spectra, dtype=np.float32)
        if data.ndim == 1:
            data = data[None, :]
        q, c = ask.positions.shape[0], self._you.description.spectral_axis.size
        if data.shape != (q, c):
            raise ConfigError(
                f"observe() wants spectra of shape ({q}, {c}) (one per suggested position), got {data.shape}"
            )
        where = (
            ask.positions if positions is None else np.asarray(positions, dtype=np.float64).reshape(ask.positions.shape)
        )
        if not np.isfinite(data).all():
            raise ConfigError(
                "observe(): the spectra hold NaN or infinite values; measure again or leave the point out"
            )
        stamp = self._clock.time()
        measurement = Measurement(ask.request_id, where, data, np.full(q, stamp), self._you._dwell)
        self._pending = None
        self._you.tells.put(measurement)
        while not self._recorded.acquire(timeout=1.0):  # the campaign made it durable and told the policy
            if self._thread is None or not self._thread.is_alive():  # it stopped on an error: suggest() says which
                break

    def close(self) -> CampaignResult | None:
        """End the campaign (a suggestion not observed is recorded as missing) and close the run."""
        if self._thread is None or self._over:
            return self._result
        self._stop.request()
        if self._pending is not None:
            self._pending = None
            self._you.tells.put(DeviceFault("not observed: the experiment was closed before its spectra came"))
        while self._thread.is_alive():
            try:
                ask = self._you.asks.get(timeout=60.0)
            except queue.Empty:
                continue
            if ask is not _DONE:  # decided before the stop was seen: never measured
                self._you.tells.put(DeviceFault("not observed: the experiment was closed"))
        self._thread.join()
        self._over = True
        return self._result

    @property
    def result(self) -> CampaignResult | None:
        """The campaign's result once it is over (``None`` before)."""
        return self._result

    @property
    def run_path(self) -> Path:
        """Where the run is."""
        return self.experiment.run_path

    @property
    def results(self) -> xarray.Dataset:
        """The run as an ``xarray.Dataset`` (after ``close()``, or while running: what is durable so far)."""
        return self.experiment.results
