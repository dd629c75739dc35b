"""Reliability: SIGKILLs survived by resuming, and instrument faults injected and recovered, with nothing lost.

Kills: a 100-spectrum ``gp-position`` campaign (inline training) against ``dualscope serve synthetic``
is SIGKILLed at random moments and resumed with ``dualscope resume`` after each kill; the final run
is compared with an uninterrupted run of the same seed against a second server with the same seed:
positions and spectra must be bit-identical. Engine processes are forked from a preloaded
``multiprocessing`` forkserver (each start costs milliseconds, not an import of torch).

Faults: a 200-spectrum campaign on an in-process driver that returns NaN or wrongly shaped spectra
and raises errors (``FaultyDriver``), and a 100-spectrum campaign over ZeroMQ through a proxy that
drops, duplicates and garbles replies (``FaultyProxy``). The baseline of each is the budget: every
spectrum asked for must be recorded, finite, each request id once.
"""

from __future__ import annotations

import json
import multiprocessing
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from benchmarks.common import Record, machine
from engine.campaign import Budget, Campaign
from engine.candidates import CandidateSet
from engine.cli.main import main as dualscope
from engine.clock import SystemClock
from engine.policy import RandomPolicy
from engine.protocols import Recorder
from engine.storage import RunWriter, read_run
from instruments.client import ZmqInstrument
from instruments.local import LocalInstrument
from instruments.server import InstrumentServer
from simulators.faults import DriverFaults, FaultyDriver, FaultyProxy, TransportFaults
from simulators.synthetic import SyntheticOptions, synthetic_microscope

ROOT = Path(__file__).parent.parent
KILL_BUDGET = 100
SERVE = (sys.executable, "-m", "engine.cli.main", "serve", "synthetic", "--seed", "3")
SERVE_OPTIONS = ("-o", "image_pixels=64", "-o", "n_channels=64", "-o", "acquisition_time_s=0.1")
COLUMNS = ("step", "candidate_index", "positions", "spectra")


@dataclass(frozen=True)
class KillChain:
    """What :func:`kill_and_resume` found.

    Attributes:
        kills: SIGKILLs that hit a running engine.
        killed_run, reference_run: the final runs (resumed after every kill; never interrupted).
        seconds: wall time from the first kill to the end of the last resume.
    """

    kills: int
    killed_run: Path
    reference_run: Path
    seconds: float

    def rows(self, path: Path) -> dict[str, np.ndarray]:
        """The compared columns of ``path``: step, candidate index, positions ``(n, d)``, spectra ``(n, c)``."""
        run = read_run(path)
        return {k: run.columns[k] for k in COLUMNS}

    def identical(self) -> bool:
        """Whether both runs hold the same rows, bit for bit."""
        a, b = self.rows(self.killed_run), self.rows(self.reference_run)
        return all(a[k].shape == b[k].shape and np.array_equal(a[k], b[k]) for k in COLUMNS)


def _serve() -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [*SERVE, *SERVE_OPTIONS], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert proc.stdout is not None
    ready = re.match(r"READY (tcp://127\.0\.0\.1:\d+)", proc.stdout.readline())
    if not ready:
        proc.kill()
        raise RuntimeError("dualscope serve synthetic did not start")
    return proc, ready.group(1)


def _config(directory: Path, endpoint: str, pipeline: bool = False) -> Path:
    directory.mkdir(parents=True)
    path = directory / "campaign.toml"
    path.write_text(
        f'[run]\nname = "kill"\noutput_dir = "{directory}"\nseed = 11\nchunk_rows = 4\nfigure = false\n'
        f"pipeline = {str(pipeline).lower()}\n"
        f'[instrument]\nmode = "connect"\nendpoint = "{endpoint}"\nimage_channel = "haadf"\ntimeout_s = 10\n'
        "[candidates]\nstride_px = 4\n"
        '[policy]\nname = "gp-position"\ninitial = 4\ntraining = "inline"\n'
        '[policy.scalariser]\nkind = "band"\nlow = 1.0\nhigh = 2.0\n'
        f"[stop]\nbudget = {KILL_BUDGET}\n"
    )
    return path


def _run_path(directory: Path) -> Path | None:
    """The run in ``directory`` once it exists and the campaign has noted its instrument."""
    for path in directory.glob("*.zarr"):
        try:
            attrs = json.loads((path / "zarr.json").read_text())["attributes"]["dualscope"]
        except (OSError, ValueError, KeyError):
            continue
        if "instrument_instance" in attrs:
            return path
    return None


def kill_and_resume(
    kills: int, directory: Path, seed: int = 7, max_delay_s: float = 1.5, pipeline: bool = False
) -> KillChain:
    """SIGKILL a campaign ``kills`` times at random moments (uniform in ``[0, max_delay_s]`` s after each
    start), resume it after each, and run the same campaign uninterrupted next to it (both sequential, or
    both pipelined: ``[run] pipeline``)."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["engine.cli.main"])
    servers = [_serve(), _serve()]
    rng = np.random.default_rng(seed)

    def engine(*argv: str) -> multiprocessing.process.BaseProcess:
        proc = ctx.Process(target=dualscope, args=(list(argv),), daemon=True)
        proc.start()
        return proc

    try:
        reference = engine("run", str(_config(directory / "reference", servers[0][1], pipeline)))
        chain_dir = directory / "killed"
        proc = engine("run", str(_config(chain_dir, servers[1][1], pipeline)))
        deadline = time.monotonic() + 60
        while (path := _run_path(chain_dir)) is None:
            if time.monotonic() > deadline or not proc.is_alive():
                raise RuntimeError("the campaign never created its run")
            time.sleep(0.01)
        done, started = 0, time.monotonic()
        while done < kills:
            time.sleep(float(rng.uniform(0.0, max_delay_s)))
            if not proc.is_alive():
                break  # it completed before this kill
            proc.kill()
            proc.join()
            done += 1
            proc = engine("resume", str(path))
        proc.join(120)
        reference.join(120)
        seconds = time.monotonic() - started
        if proc.exitcode != 0 or reference.exitcode != 0:
            raise RuntimeError(f"exit codes: resumed {proc.exitcode}, reference {reference.exitcode}")
    finally:
        for server, _ in servers:
            server.send_signal(signal.SIGTERM)
            server.communicate(timeout=20)
    ref_path = _run_path(directory / "reference")
    assert ref_path is not None
    return KillChain(done, path, ref_path, seconds)


def _candidates(inst: Any) -> CandidateSet:
    return CandidateSet.from_image_grid(inst.acquire_image("haadf"), inst.describe(), 2, margin_px=1)


def _campaign(inst: Any, candidates: CandidateSet, recorder: Recorder, budget: int) -> Campaign:
    return Campaign(
        instrument=inst, policy=RandomPolicy(np.random.default_rng(0)), recorder=recorder, candidates=candidates,
        spectral_axis=inst.describe().spectral_axis, stop_rules=[Budget(budget)], clock=SystemClock(),
        request_prefix="faults", fault_retries=2, max_faults_in_a_row=20,
    )  # fmt: skip


def driver_faults(directory: Path, budget: int = 200) -> tuple[int, int, int, bool]:
    """``(faults injected, failed calls recorded, spectra recorded, all finite)`` of a faulty-driver campaign."""
    options = SyntheticOptions(image_pixels=48, n_channels=64, acquisition_time_s=0.0)
    faults = DriverFaults(nan_probability=0.15, wrong_shape_probability=0.1, error_probability=0.1)
    driver = FaultyDriver(synthetic_microscope(options, SystemClock()), np.random.default_rng(3), faults)
    inst = LocalInstrument(driver)
    candidates = _candidates(inst)
    writer = RunWriter.create(
        directory / "driver-faults.zarr", description=inst.describe(), images=[inst.acquire_image("haadf")],
        candidates=candidates, config_toml="", clock=SystemClock(),
    )  # fmt: skip
    _campaign(inst, candidates, writer, budget).run()
    writer.close()
    run = read_run(directory / "driver-faults.zarr")
    return sum(driver.injected.values()), len(run.attrs["missing"]), run.n, bool(np.isfinite(run.spectra).all())


class _CountingDriver:
    """A driver that counts the measure calls reaching it: how often the instrument really measured."""

    def __init__(self, inner: Any):
        self.inner, self.measured = inner, 0

    def describe(self) -> Any:
        return self.inner.describe()

    def acquire_image(self, channel: str) -> Any:
        return self.inner.acquire_image(channel)

    def measure(self, positions: Any) -> Any:
        self.measured += positions.shape[0]
        return self.inner.measure(positions)

    def status(self) -> Any:
        return self.inner.status()

    def abort(self) -> None:
        self.inner.abort()


def transport_faults(budget: int = 100) -> tuple[dict[str, int], int, int]:
    """``(faults injected by kind, spectra recorded, positions the driver measured)`` behind a faulty proxy.

    Recorded spectra equal to the driver's measured positions: a retried request was answered from the
    server's reply cache, never measured twice.
    """
    context: zmq.Context[Any] = zmq.Context()
    options = SyntheticOptions(image_pixels=48, n_channels=64, acquisition_time_s=0.0)
    driver = _CountingDriver(synthetic_microscope(options, SystemClock()))
    server = InstrumentServer(driver, context, SystemClock())
    stop = threading.Event()
    thread = threading.Thread(target=server.serve, args=(stop, 5), daemon=True)
    thread.start()
    faults = TransportFaults(drop_probability=0.15, duplicate_probability=0.15, garbage_probability=0.1)
    proxy = FaultyProxy(server.endpoint, context, np.random.default_rng(1), faults)
    ids: list[str] = []

    class Ids:
        def record_decision(self, decision: Any) -> None: ...

        def record_measurement(self, decision: Any, measurement: Any, timings: Any) -> int:
            ids.append(measurement.request_id)
            return len(ids)

        def record_missing(self, decision: Any, reason: str, *, released: bool = False) -> None: ...

        def close(self) -> None: ...

    try:
        with ZmqInstrument(proxy.endpoint, context, timeout_s=0.3, retries=3) as inst:
            result = _campaign(inst, _candidates(inst), Ids(), budget).run()
    finally:
        proxy.close()
        stop.set()
        thread.join(timeout=5)
        server.close()
        context.destroy(linger=0)
    return dict(faults.counts), result.n_recorded, driver.measured


def run() -> list[Record]:
    """The reliability records."""
    m = machine()
    with tempfile.TemporaryDirectory() as tmp:
        chain = kill_and_resume(50, Path(tmp) / "kills")
        identical = chain.identical()
        injected, recorded_faults, n, finite = driver_faults(Path(tmp))
    counts, n_proxy, measured = transport_faults()
    kinds = ", ".join(f"{v} {k}" for k, v in counts.items() if v)
    return [
        Record(
            "reliability",
            f"SIGKILLs survived by `dualscope resume` ({KILL_BUDGET}-spectrum gp-position run, {chain.seconds:.0f} s; "
            f"positions and spectra {'identical to' if identical else 'DIFFERENT from'} an uninterrupted run)",
            chain.kills,
            "kills",
            "kills attempted",
            50,
            chain.kills / 50 if identical else 0.0,
            "ratio >= 1.0",
            m,
        ),
        Record(
            "reliability",
            f"spectra recorded by a 200-spectrum campaign with driver faults ({injected} injected: NaN, wrong shape, "
            f"errors; {recorded_faults} failed calls recorded as missing; all finite: {finite})",
            n,
            "spectra",
            "budget",
            200,
            n / 200 if finite else 0.0,
            "ratio >= 1.0",
            m,
        ),
        Record(
            "reliability",
            f"spectra recorded over ZeroMQ through a faulty proxy ({sum(counts.values())} faults: {kinds}; "
            f"the driver measured {measured} positions: {'nothing twice' if measured == n_proxy else 'SOME TWICE'})",
            n_proxy,
            "spectra",
            "budget",
            100,
            n_proxy / 100 if measured == n_proxy else 0.0,
            "ratio >= 1.0",
            m,
        ),
    ]
