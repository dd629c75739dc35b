"""A ``Driver`` for Nion STEMs, on the Nion Swift instrumentation API (no GUI).

It talks to the STEM controller, the scan device and the EELS camera through Nion's hardware
sources (``nionswift-instrumentation``), so the same code drives a Nion microscope and Nion's own
simulated one (``nionswift-usim``, see ``instruments.drivers.nion_usim``).

Coordinates are converted here and nowhere else. The engine's axes are ``x`` and ``y`` in nm over
``[0, fov]``, origin at the top-left corner of the scan frame (like the structural image's pixel
centres); Nion's probe position is the fraction of the frame ``(y, x)`` in ``[0, 1]``:
``fraction = position_nm / fov_nm``. The scan's centre on the stage (``center_nm``) is reported in
``describe`` so that positions can be put back in stage coordinates.

Spectra are the camera frames (``rows × energy``) summed over the rows and over ``frames`` frames,
with the energy calibration of the frame's last dimension. Between measurements the beam is
blanked (control ``C_Blank``) when the microscope has that control and ``blank_between`` is set;
``status`` says whether it could.
"""

from __future__ import annotations

import contextlib
import copy
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.errors import AcquisitionAborted, BadRequest, DeviceFault, InstrumentTimeout
from engine.protocols import Clock
from engine.types import JSON, Axis, Image, ImageAxis, InstrumentDescription, SpectralAxis, SpectrumBatch
from instruments.drivers.nion_options import NionOptions

BLANKER = "C_Blank"


def to_fraction(positions_nm: NDArray[np.float64], fov_nm: float) -> NDArray[np.float64]:
    """Engine positions ``(n, 2)`` as ``(x, y)`` nm → Nion probe fractions ``(n, 2)`` as ``(y, x)``."""
    return np.asarray(positions_nm[:, ::-1] / fov_nm, dtype=np.float64)


def to_nm(fractions: NDArray[np.float64], fov_nm: float) -> NDArray[np.float64]:
    """Nion probe fractions ``(n, 2)`` as ``(y, x)`` → engine positions ``(n, 2)`` as ``(x, y)`` nm."""
    return np.asarray(fractions[:, ::-1] * fov_nm, dtype=np.float64)


class NionStem:
    """A Nion STEM (real or ``nionswift-usim``) behind the ``Driver`` protocol.

    Args:
        stem_controller: Nion's STEM controller (probe position, controls such as ``C_Blank``).
        scan: the scan hardware source.
        eels: the EELS camera hardware source.
        options: image frame, camera exposure, frames per spectrum, blanking.
        clock: timestamps.
        on_close: called by ``close`` (stops the instrumentation stack that was started for it).
    """

    def __init__(
        self,
        stem_controller: Any,
        scan: Any,
        eels: Any,
        options: NionOptions,
        clock: Clock,
        on_close: Callable[[], None] | None = None,
    ):
        self._stem, self._scan, self._eels, self._opt, self._clock = stem_controller, scan, eels, options, clock
        self._on_close = on_close
        self._abort = threading.Event()
        self._busy = threading.Event()
        self._lock = threading.Lock()
        self._n_spectra = 0
        self._last_fraction: list[float] | None = None
        self._channel_index = self._find_channel(options.image_channel)
        frame = copy.deepcopy(scan.get_current_frame_parameters())
        if options.fov_nm > 0:
            frame.fov_nm = options.fov_nm
        self._fov_nm = float(frame.fov_nm)
        self._center_nm = [float(v) for v in tuple(frame.center_nm)]
        self.blanker = self._has_blanker()
        self._set_blank(True)
        self._spectral = self._calibrate()

    # ---------------------------------------------------------------- set-up
    def _find_channel(self, name: str) -> int:
        names = [str(self._scan.get_channel_name(i)) for i in range(self._scan.channel_count)]
        for i, n in enumerate(names):
            if n.lower() == name.lower():
                return i
        raise BadRequest(f"the scan device has no channel {name!r}; it has {', '.join(names)}")

    def _has_blanker(self) -> bool:
        try:
            ok, _ = self._stem.TryGetVal(BLANKER)
        except Exception:  # a controller without the control at all
            return False
        return bool(ok)

    def _set_blank(self, blanked: bool) -> None:
        if self.blanker and self._opt.blank_between:
            self._stem.SetVal(BLANKER, 1.0 if blanked else 0.0)

    def _camera_parameters(self) -> Any:
        params = copy.deepcopy(self._eels.get_current_frame_parameters())
        params.exposure_ms = self._opt.exposure_ms
        params.processing = None  # full frames; summed here, keeping the energy calibration
        return params

    def _camera_idle(self) -> None:
        """Wait until the camera's previous recording (finished or aborted) has wound down."""
        t0 = time.monotonic()
        while self._eels.is_recording:
            if time.monotonic() - t0 > self._opt.timeout_s:
                raise InstrumentTimeout(f"the EELS camera is still recording after {self._opt.timeout_s} s")
            time.sleep(0.002)

    def _frame(self) -> Any:
        """One camera frame (an xdata), abortable."""
        self._camera_idle()
        task = self._eels.start_recording(frame_parameters=self._camera_parameters())
        xdatas = task.grab_xdatas(timeout=self._opt.timeout_s)
        if self._abort.is_set():
            self._eels.abort_recording()
            self._camera_idle()
            raise AcquisitionAborted("acquisition aborted by request")
        if not xdatas or xdatas[0] is None:
            raise InstrumentTimeout(f"the EELS camera returned no frame within {self._opt.timeout_s} s")
        return xdatas[0]

    def _calibrate(self) -> SpectralAxis:
        """The energy axis of the camera, from one frame's calibration (beam blanked if possible)."""
        xdata = self._frame()
        cal = xdata.dimensional_calibrations[-1]
        units = str(cal.units or "")
        if units != "eV":
            raise DeviceFault(f"the EELS camera's energy axis is in {units!r}, expected eV: calibrate the spectrometer")
        return SpectralAxis("energy_loss", "eV", float(cal.offset), float(cal.scale), int(xdata.data.shape[-1]))

    # --------------------------------------------------------------- Driver
    def describe(self) -> InstrumentDescription:
        """Axes ``x``, ``y`` over the scan's field of view (nm), the camera's energy axis, the image channel."""
        fov = self._fov_nm
        return InstrumentDescription(
            name="nion-stem",
            axes=(Axis("x", "nm", 0.0, fov), Axis("y", "nm", 0.0, fov)),
            spectral_axis=self._spectral,
            image_channels=(self._opt.image_channel.lower(),),
            max_batch=4096,
            extra={
                "scan": str(self._scan.hardware_source_id),
                "camera": str(self._eels.hardware_source_id),
                "scan_center_nm": self._center_nm,
                "exposure_ms": self._opt.exposure_ms,
                "frames_per_spectrum": self._opt.frames,
                "blanker": self.blanker,
            },
        )

    def acquire_image(self, channel: str) -> Image:
        """One scan frame of the image channel ``(h, w)``; pixel centres over ``[0, fov]`` nm."""
        if channel.lower() != self._opt.image_channel.lower():
            raise BadRequest(f"unknown image channel {channel!r}; this driver serves {self._opt.image_channel!r}")
        with self._lock:
            self._abort.clear()
            self._busy.set()
            try:
                frame = copy.deepcopy(self._scan.get_current_frame_parameters())
                frame.size = (self._opt.image_pixels, self._opt.image_pixels)
                frame.pixel_time_us = self._opt.pixel_time_us
                frame.fov_nm = self._fov_nm
                self._scan.set_channel_enabled(self._channel_index, True)
                self._set_blank(False)
                xdatas = self._scan.record_immediate(frame)
            finally:
                self._set_blank(True)
                self._busy.clear()
        if self._abort.is_set():
            raise AcquisitionAborted("image acquisition aborted by request")
        names = [x.metadata.get("hardware_source", {}).get("channel_name") for x in xdatas if x is not None]
        for x, name in zip([x for x in xdatas if x is not None], names, strict=True):
            if str(name).lower() == channel.lower():
                data = np.asarray(x.data, dtype=np.float32)
                step = self._fov_nm / data.shape[0]
                return Image(channel, data, ImageAxis("y", "nm", step / 2, step), ImageAxis("x", "nm", step / 2, step))
        raise DeviceFault(f"the scan returned channels {names}, not {channel!r}")

    def measure(self, positions: NDArray[np.float64]) -> SpectrumBatch:
        """Park the probe at each of ``positions (n, 2)`` nm and sum ``frames`` camera frames there."""
        fractions = to_fraction(positions, self._fov_nm)
        spectra = np.empty((positions.shape[0], self._spectral.size), np.float32)
        times = np.empty(positions.shape[0])
        with self._lock:
            self._abort.clear()
            self._busy.set()
            try:
                for k, (fy, fx) in enumerate(fractions):
                    self._scan.probe_position = (float(fy), float(fx))
                    self._last_fraction = [float(fy), float(fx)]
                    self._set_blank(False)
                    total = None
                    for _ in range(self._opt.frames):
                        if self._abort.is_set():
                            raise AcquisitionAborted("acquisition aborted by request")
                        frame = np.asarray(self._frame().data, dtype=np.float64)
                        summed = frame.reshape(-1, frame.shape[-1]).sum(axis=0)
                        total = summed if total is None else total + summed
                    self._set_blank(True)
                    assert total is not None
                    if total.shape != (self._spectral.size,):
                        raise DeviceFault(f"the camera changed its frame width to {total.shape[0]} channels")
                    spectra[k] = total
                    times[k] = self._clock.time()
                    self._n_spectra += 1
            finally:
                self._set_blank(True)
                self._busy.clear()
        return SpectrumBatch(spectra, times, self._opt.exposure_ms * self._opt.frames / 1000.0)

    def status(self) -> Mapping[str, JSON]:
        """Probe position (nm), blanking, whether acquiring, spectra so far."""
        pos = None
        if self._last_fraction is not None:
            pos = to_nm(np.asarray([self._last_fraction]), self._fov_nm)[0].tolist()
        blanked: JSON = None
        if self.blanker:
            ok, value = self._stem.TryGetVal(BLANKER)
            blanked = bool(value) if ok else None
        return {
            "busy": self._busy.is_set(),
            "probe_position_nm": pos,
            "probe_state": str(self._scan.probe_state),
            "beam_blanked": blanked,
            "blanker": self.blanker,
            "spectra_measured": self._n_spectra,
        }

    def abort(self) -> None:
        """Stop the camera and scan acquisitions in progress (thread-safe)."""
        self._abort.set()
        for source in (self._eels, self._scan):
            with contextlib.suppress(Exception):  # nothing was recording
                source.abort_recording()

    def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Block until no acquisition runs (tests, shutdown)."""
        t0 = time.monotonic()
        while self._busy.is_set() and time.monotonic() - t0 < timeout_s:
            time.sleep(0.01)

    def close(self) -> None:
        """Abort, wait for the acquisition to end, blank the beam and stop the stack (idempotent)."""
        self.abort()
        self.wait_idle()
        self._set_blank(True)
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()
