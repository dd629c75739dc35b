"""Start Nion's instrumentation stack without the Swift GUI, with Nion's simulated STEM or a lab's devices.

Nion's hardware plug-ins register their devices in a process-wide registry; the instrumentation
layer turns them into hardware sources. ``open_nion`` does what Swift does at start-up, minus
the GUI: it starts the hardware-source manager and the camera and scan factories, registers the
devices (``nionswift-usim``'s simulated STEM, or the modules named in ``device_modules``), finds
the STEM controller, the scan device and the EELS camera, and returns the driver,
whose ``close`` undoes all of it. One stack per process at a time (the registry is global).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import pathlib
import tempfile
from collections.abc import Callable
from typing import Any

from engine.errors import ConfigError, DeviceFault
from engine.protocols import Clock
from instruments.drivers.nion import NionStem
from instruments.drivers.nion_options import NionOptions


def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        raise ConfigError(
            f"cannot import {name} ({exc}); the Nion driver needs the 'nion' extra: pip install 'dualscope[nion]'"
        ) from exc


def open_nion(options: NionOptions, clock: Clock) -> NionStem:
    """Start the stack, register the devices and build the driver; its ``close`` stops the stack."""
    if not options.usim and not options.device_modules:
        raise ConfigError("the Nion driver needs usim = true or device_modules naming the lab's device plug-ins")
    hardware = _import("nion.instrumentation.HardwareSource")
    camera_base = _import("nion.instrumentation.camera_base")
    scan_base = _import("nion.instrumentation.scan_base")
    registry = _import("nion.utils.Registry")
    closers: list[Callable[[], None]] = []
    location = pathlib.Path(tempfile.mkdtemp(prefix="dualscope-nion-"))
    logging.getLogger("acquisition").setLevel(logging.ERROR)
    hardware.run()
    closers += [lambda: hardware.HardwareSourceManager().close(), hardware.stop]
    camera_base.run(location)
    closers.append(camera_base.stop)
    scan_base.run(location)
    closers.append(scan_base.stop)
    try:
        if options.usim:
            configuration = _import("nion.usim_device.DeviceConfiguration").AcquisitionContextConfiguration(
                set_configuration_location=False
            )
            configuration.run()
            closers.append(configuration.stop)
        for module in options.device_modules:
            plugin = _import(module)
            plugin.run()
            if hasattr(plugin, "stop"):
                closers.append(plugin.stop)
        manager = hardware.HardwareSourceManager()
        sources = list(manager.hardware_sources)
        scan = _pick(sources, options.scan_id, lambda s: hasattr(s, "probe_position"), "scan device")
        eels = _pick(
            sources,
            options.eels_id,
            lambda s: "eels" in str(getattr(s, "hardware_source_id", "")).lower(),
            "EELS camera",
        )
        stem = registry.get_component("stem_controller")
        if stem is None:
            raise DeviceFault("no STEM controller is registered")
        return NionStem(stem, scan, eels, options, clock, on_close=lambda: _run_all(closers))
    except BaseException:
        _run_all(closers)
        raise


def _run_all(closers: list[Callable[[], None]]) -> None:
    """Run the closers, last registered first, each even if an earlier one failed."""
    while closers:
        with contextlib.suppress(Exception):  # shut down as much as possible
            closers.pop()()


def _pick(sources: list[Any], wanted: str, default: Callable[[Any], bool], what: str) -> Any:
    ids = [str(s.hardware_source_id) for s in sources]
    if wanted:
        for s in sources:
            if s.hardware_source_id == wanted:
                return s
        raise ConfigError(f"no {what} with id {wanted!r}; the hardware sources are {', '.join(ids) or 'none'}")
    matches = [s for s in sources if default(s)]
    if len(matches) != 1:
        raise ConfigError(f"cannot tell which hardware source is the {what} among {', '.join(ids) or 'none'}: name it")
    return matches[0]
