"""Conversions between domain types and wire ``Message`` s (pure)."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from engine.errors import InvalidSpectrum
from engine.types import Image, ImageAxis, InstrumentDescription, Measurement, SpectrumBatch
from instruments.wire import Message


def request(request_id: str, command: str, body: dict | None = None, arrays: dict | None = None) -> Message:
    """A request message."""
    return Message("request", request_id, command, body or {}, arrays or {})


def reply(req: Message, body: dict | None = None, arrays: dict | None = None, units: dict | None = None) -> Message:
    """A reply to ``req``."""
    return Message("reply", req.request_id, req.command, body or {}, arrays or {}, units or {})


def description_reply(req: Message, description: InstrumentDescription, extra: dict | None = None) -> Message:
    """Reply to ``hello``/``describe``."""
    return reply(req, {"description": description.to_json(), **(extra or {})})


def description_from(msg: Message) -> InstrumentDescription:
    """The description in a ``hello``/``describe`` reply."""
    return InstrumentDescription.from_json(msg.body["description"])


def image_reply(req: Message, image: Image) -> Message:
    """Reply to ``acquire_image``: the frame ``(h, w)`` and its calibration."""
    body = {
        "channel": image.channel,
        "units": image.units,
        "y_axis": image.y_axis.to_json(),
        "x_axis": image.x_axis.to_json(),
    }
    return reply(req, body, {"image": image.data}, {"image": image.units})


def image_from(msg: Message) -> Image:
    """The image in an ``acquire_image`` reply (a writable copy)."""
    b = msg.body
    data = np.array(msg.arrays["image"])
    return Image(
        str(b["channel"]), data, ImageAxis.from_json(b["y_axis"]), ImageAxis.from_json(b["x_axis"]), b["units"]
    )


def measurement_reply(req: Message, positions: NDArray[np.float64], batch: SpectrumBatch) -> Message:
    """Reply to ``measure``: positions ``(n, d)``, spectra ``(n, c)`` float32, timestamps ``(n,)``."""
    arrays = {
        "positions": positions,
        "spectra": np.asarray(batch.spectra, dtype=np.float32),
        "timestamps": np.asarray(batch.timestamps, dtype=np.float64),
    }
    return reply(req, {"acquisition_time_s": batch.acquisition_time_s}, arrays, {"spectra": "counts"})


def measurement_from(msg: Message) -> Measurement:
    """The ``Measurement`` in a ``measure`` reply; raises ``InvalidSpectrum`` if arrays are missing."""
    try:
        pos, spectra, times = (msg.arrays[k] for k in ("positions", "spectra", "timestamps"))
    except KeyError as exc:
        raise InvalidSpectrum(f"measure reply {msg.request_id} lacks array {exc}") from exc
    return Measurement(
        msg.request_id,
        np.array(pos, dtype=np.float64),
        np.array(spectra, dtype=np.float32),
        np.array(times, dtype=np.float64),
        float(msg.body.get("acquisition_time_s", float("nan"))),
    )
