"""The project's exception types.

Low-level errors (ZeroMQ, zarr, pydantic, OS) are translated into these at the
boundary, so callers catch one family. Instrument errors carry a stable wire
``code`` so that a server can send them and a client re-raise them typed.
"""

from __future__ import annotations

from typing import ClassVar


class DualscopeError(Exception):
    """Base class of every error dualscope raises on purpose."""


class ConfigError(DualscopeError, ValueError):
    """A configuration file or option is invalid; the message names the key."""


class InstrumentError(DualscopeError):
    """An instrument refused or failed a command."""

    code: ClassVar[str] = "device_fault"

    def __init__(self, message: str, request_id: str = ""):
        super().__init__(message)
        self.request_id = request_id


class BadRequest(InstrumentError):
    """The request was malformed or named an unknown command or argument."""

    code = "bad_request"


class OutOfLimits(InstrumentError):
    """A requested position lies outside the instrument's axis limits."""

    code = "out_of_limits"


class DeviceFault(InstrumentError):
    """The device (driver) failed while carrying out a valid command."""

    code = "device_fault"


class InstrumentBusy(InstrumentError):
    """The instrument is already acquiring and cannot start another acquisition."""

    code = "busy"


class ProtocolVersionMismatch(InstrumentError):
    """The peer speaks another version of the wire protocol."""

    code = "version_mismatch"


class AcquisitionAborted(InstrumentError):
    """The acquisition was aborted before it completed."""

    code = "aborted"


class Unauthorised(InstrumentError):
    """The client's key does not hold a role that may send this command."""

    code = "unauthorised"


class InstrumentTimeout(InstrumentError):
    """No reply arrived within the timeout after all retries."""

    code = "timeout"


class NoRecordedData(InstrumentError):
    """A replay was asked for a position that the recording never measured."""

    code = "no_data"


class InstrumentConnectionError(InstrumentError):
    """The transport to the instrument failed (socket error, server gone)."""

    code = "connection"


class InvalidSpectrum(DualscopeError):
    """A spectrum has the wrong shape or contains NaN or infinite values."""


class RunStorageError(DualscopeError):
    """A run on disk cannot be created, opened or appended to."""


class RunCorrupt(RunStorageError):
    """A run on disk is damaged beyond what recovery can repair."""


class Stopped(DualscopeError):
    """The operator stopped a long phase (pre-training, a report) before it finished."""


class RunInUse(RunStorageError):
    """Another live process holds the run's writer lock (a campaign is still writing it)."""


INSTRUMENT_ERRORS: dict[str, type[InstrumentError]] = {
    cls.code: cls
    for cls in (
        BadRequest,
        OutOfLimits,
        DeviceFault,
        InstrumentBusy,
        ProtocolVersionMismatch,
        AcquisitionAborted,
        InstrumentTimeout,
        InstrumentConnectionError,
        NoRecordedData,
        Unauthorised,
    )
}
"""Wire error code → exception class, used to re-raise typed errors from replies."""


class ResumeError(RunStorageError):
    """A run cannot be resumed as it is (closed, never started, another instrument or configuration)."""
