"""Drift tracking: where the specimen has moved since the reference image, and where to send the probe.

Every candidate position is a point of the reference image (the structural image the run began
with). When the specimen drifts by ``d``, that point sits at scan position ``p + d``; the tracker
estimates ``d`` from a fresh frame, registered against the reference with scikit-image's sub-pixel
phase cross-correlation, and the campaign sends the probe to ``p + d̂``. Between two tracking
frames ``d̂`` stays the last accepted estimate, so each step's command is ``p + d̂`` with the
``d̂`` of the drift track's last accepted entry before it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from engine.config import DriftSection
from engine.errors import ConfigError
from engine.protocols import Clock
from engine.types import JSON, Axis, Image


@dataclass(frozen=True)
class DriftEstimate:
    """One tracking frame's outcome (an entry of the run's ``drift_track``).

    Attributes:
        time: when the frame was registered, s since the epoch.
        step: the first campaign step that uses it.
        n_recorded: spectra recorded when it was taken.
        shift: the specimen's displacement since the reference, one value per scan axis (axes' units);
            the estimate in force after this entry (the previous one when refused).
        measured: what this frame's registration found (NaN when it found nothing).
        error: the registration error (0: identical frames, 1: nothing in common; NaN without a frame).
        accepted: whether the probe now follows ``measured``.
        reason: why it was refused ("" when accepted).
        seconds: acquiring and registering the frame, s.

    Examples:
        >>> estimate = DriftEstimate(1.7e9, 40, 40, (2.5, -1.0), (2.5, -1.0), 0.2, True, "", 0.05)
        >>> estimate.to_json()["shift"], estimate.to_json()["accepted"]  # as stored in the run's drift_track
        ([2.5, -1.0], True)
    """

    time: float
    step: int
    n_recorded: int
    shift: tuple[float, ...]
    measured: tuple[float, ...]
    error: float
    accepted: bool
    reason: str
    seconds: float

    def to_json(self) -> dict[str, JSON]:
        """A JSON-ready dict (NaN as ``None``)."""
        out: dict[str, JSON] = {}
        for key, value in asdict(self).items():
            if isinstance(value, tuple):
                out[key] = [_finite(v) for v in value]
            elif isinstance(value, float):
                out[key] = _finite(value)
            else:
                out[key] = value
        return out


def _finite(value: float) -> float | None:
    return float(value) if np.isfinite(value) else None


class DriftTracker:
    """Estimates specimen drift from tracking frames and shifts probe commands by it.

    Args:
        section: the ``[drift]`` settings (interval, window, quality checks).
        reference: the run's structural image; candidate positions are points of it.
        axes: the instrument's scan axes (names ``x`` and ``y`` matched to the image's columns and rows).
        clock: time of each estimate.

    Examples:
        >>> from engine.config import DriftSection
        >>> from engine.types import Axis, Image, ImageAxis
        >>> rng = np.random.default_rng(0)
        >>> scene = rng.random((64, 64))
        >>> axis = ImageAxis("x", "nm", 0.5, 1.0)
        >>> reference = Image("haadf", scene, ImageAxis("y", "nm", 0.5, 1.0), axis)
        >>> axes = [Axis("x", "nm", 0, 64), Axis("y", "nm", 0, 64)]
        >>> tracker = DriftTracker(DriftSection(enabled=True, every_n=10), reference, axes, SystemClock())
        >>> drifted = Image("haadf", np.roll(scene, (2, 3), axis=(0, 1)), reference.y_axis, axis)  # 3 nm in x, 2 in y
        >>> estimate = tracker.register(drifted, step=10, n_recorded=10)
        >>> estimate.accepted, np.round(tracker.offset, 2).tolist()
        (True, [3.0, 2.0])
        >>> tracker.command(np.array([[10.0, 20.0]]))[0].tolist()  # the probe follows the specimen
        [[13.0, 22.0]]
    """

    def __init__(self, section: DriftSection, reference: Image, axes: Sequence[Axis], clock: Clock):
        names = [a.name for a in axes]
        if sorted(names) != ["x", "y"]:
            raise ConfigError(f"[drift] tracks x/y scans; this instrument's axes are {names}")
        self.section, self.channel, self._clock = section, reference.channel, clock
        self._axes = tuple(axes)
        self._order = [names.index("x"), names.index("y")]
        self._px = np.array([reference.x_axis.scale, reference.y_axis.scale], dtype=np.float64)  # nm per px (x, y)
        self._window = _window_pixels(section, reference)
        r0, r1, c0, c1 = self._window
        self._reference = np.asarray(reference.data, dtype=np.float64)[r0:r1, c0:c1]
        self._shape = reference.data.shape
        self._offset = np.zeros(len(axes))
        self._refused_in_a_row = 0  # frames refused since the last accepted one: each allows max_shift_nm more
        self._last_n, self._last_t = 0, clock.monotonic()

    @property
    def offset(self) -> NDArray[np.float64]:
        """The estimated drift ``(d,)`` added to every probe command, in the axes' units and order."""
        return self._offset.copy()

    def due(self, n_recorded: int) -> bool:
        """Whether a tracking frame is due before the next step (``every_n`` spectra or ``every_s`` seconds)."""
        s = self.section
        if s.every_n is not None and n_recorded - self._last_n >= s.every_n:
            return True
        return s.every_s is not None and self._clock.monotonic() - self._last_t >= s.every_s

    def command(self, positions: NDArray[np.float64]) -> tuple[NDArray[np.float64], str | None]:
        """Scan positions ``(n, d)`` for reference positions ``(n, d)``, and why not if one leaves the axes' range."""
        sent = positions + self._offset[None, :]
        for k, axis in enumerate(self._axes):
            outside = (sent[:, k] < axis.low) | (sent[:, k] > axis.high)
            if outside.any():
                value = float(sent[np.flatnonzero(outside)[0], k])
                return sent, (
                    f"the drift-corrected {axis.name} = {value:.4g} {axis.units} is outside the instrument's range "
                    f"[{axis.low:.4g}, {axis.high:.4g}]: the specimen drifted that point out of the field"
                )
        return sent, None

    def register(self, image: Image, step: int, n_recorded: int, started: float | None = None) -> DriftEstimate:
        """Register a tracking frame against the reference; accept it if it passes the quality checks.

        Args:
            image: a fresh frame of the reference's channel, same pixel grid.
            step: the next campaign step (the first to use the estimate).
            n_recorded: spectra recorded so far.
            started: monotonic time the frame's acquisition began (for ``seconds``; default now).
        """
        from skimage.registration import phase_cross_correlation  # ~0.3 s import, only when tracking

        t0 = self._clock.monotonic() if started is None else started
        if image.data.shape != self._shape:
            return self._refused(step, n_recorded, t0, f"frame {image.data.shape} != reference {self._shape}")
        frame = np.asarray(image.data, dtype=np.float64)
        if not np.isfinite(frame).all() or np.ptp(frame) == 0:
            return self._refused(step, n_recorded, t0, "the frame is blank or not finite")
        r0, r1, c0, c1 = self._window
        # bring the specimen back by the current estimate, then register what is left: a small residual keeps
        # the content leaving and entering at the edges from biasing the peak towards zero; twice, to refine
        measured_xy = self._scan_xy(self._offset)
        for _ in range(2):
            back = ndimage.shift(frame, -measured_xy[::-1] / self._px[::-1], order=3, mode="nearest")
            shift, error, _ = phase_cross_correlation(  # type: ignore[no-untyped-call]
                self._reference, back[r0:r1, c0:c1], upsample_factor=self.section.upsample, normalization=None
            )
            # the frame shifted by ``shift`` (rows, cols) lines up with the reference: the specimen moved by −shift
            measured_xy = measured_xy - np.array([shift[1], shift[0]]) * self._px
        measured = self._axes_order(measured_xy)
        jump = float(np.linalg.norm(measured - self._offset))
        reason = ""
        if not error <= self.section.max_error:
            reason = f"registration error {error:.3f} > max_error {self.section.max_error}"
        elif jump > (allowed := self.section.max_shift_nm * (1 + self._refused_in_a_row)):
            reason = f"a move of {jump:.3g} since the last accepted estimate > {allowed:.3g} (max_shift_nm per frame)"
        if not reason:
            self._offset = measured
            self._refused_in_a_row = 0
        else:
            self._refused_in_a_row += 1
        return self._entry(step, n_recorded, t0, measured, float(error), reason)

    def failed(self, step: int, n_recorded: int, reason: str, started: float | None = None) -> DriftEstimate:
        """Record a tracking frame that could not be acquired (the probe keeps the last estimate)."""
        t0 = self._clock.monotonic() if started is None else started
        return self._refused(step, n_recorded, t0, reason)

    def restore(self, track: Sequence[Mapping[str, JSON]]) -> None:
        """Go on from a run's drift track (resume): the last accepted shift, and when tracking last ran."""
        if not track:
            return
        last = track[-1]
        self._offset = np.asarray([np.nan if v is None else v for v in last["shift"]], dtype=np.float64)
        self._last_n = int(last["n_recorded"])

    def _refused(self, step: int, n_recorded: int, t0: float, reason: str) -> DriftEstimate:
        """A frame with nothing to measure: recorded, and one more refused in a row."""
        self._refused_in_a_row += 1
        return self._entry(step, n_recorded, t0, np.full(len(self._axes), np.nan), float("nan"), reason)

    def _entry(
        self, step: int, n_recorded: int, t0: float, measured: NDArray[np.float64], error: float, reason: str
    ) -> DriftEstimate:
        self._last_n, self._last_t = n_recorded, self._clock.monotonic()
        return DriftEstimate(
            time=self._clock.time(),
            step=step,
            n_recorded=n_recorded,
            shift=tuple(float(v) for v in self._offset),
            measured=tuple(float(v) for v in measured),
            error=error,
            accepted=not reason,
            reason=reason,
            seconds=self._last_t - t0,
        )

    def _scan_xy(self, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """``(x, y)`` of a vector in the axes' order."""
        return np.asarray(values[self._order], dtype=np.float64)

    def _axes_order(self, xy: NDArray[np.float64]) -> NDArray[np.float64]:
        out = np.zeros(len(self._axes))
        out[self._order] = xy
        return out


def _window_pixels(section: DriftSection, reference: Image) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)`` of the tracking window in the reference (the whole frame without one)."""
    h, w = reference.data.shape
    if section.window_nm is None:
        return 0, h, 0, w
    x0, y0, x1, y1 = section.window_nm
    y, x = reference.coords()
    cols = np.flatnonzero((x >= x0) & (x <= x1))
    rows = np.flatnonzero((y >= y0) & (y <= y1))
    if cols.size < 8 or rows.size < 8:
        raise ConfigError(
            f"[drift] window_nm = {list(section.window_nm)} covers {cols.size} × {rows.size} pixels of the "
            f"reference image (x {x[0]:.4g}–{x[-1]:.4g}, y {y[0]:.4g}–{y[-1]:.4g}); it needs at least 8 × 8"
        )
    return int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
