"""Loop overhead per step (raster policy, simulator served over loopback) vs a bare ZeroMQ round trip.

Everything is measured in this run, on this machine:

* ``bare``: median round trip of a minimal DEALER→ROUTER→DEALER exchange with an
  echo server in its own process, whose reply carries the payload of the step's reply: one
  spectrum (256 float32 channels, its position and timestamp, 1.0 KiB) for a single-spectrum step,
  a batch's 16 for a batched one, so that the loop is compared with moving the same payload, not
  with one empty message (until 2026-12-01 the single-spectrum rows used an empty one, about 5 %
  quicker).
* ``step``: median wall time of one campaign step (decide, record decision, measure
  over ZeroMQ against ``dualscope serve synthetic`` in its own process, make the
  spectrum durable, tell the policy).
* ``driver``: median time the simulator itself spends computing one spectrum
  (what a real microscope would spend acquiring), measured by calling the driver
  directly on the same positions.
* ``overhead = step − driver``: what dualscope adds per step; the goal is ≤ 3× ``bare``.

Steps are timed one by one, so a step that also commits a block of rows to Zarr (every
``chunk_rows``) is one slow step among many: the median is the typical step, the mean (total wall
time over steps) the throughput; both are reported. Pipelined, the run uses group commit as
``dualscope run`` does (``RunWriter.group_commit``): rows are made durable by a syncer thread and
blocks are committed on a thread of their own; the rows written but not yet durable at each step
are reported too (what a power cut could take from the run; ``dualscope resume`` fetches them back
from the instrument).
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from benchmarks.common import Record, machine
from engine.campaign import Budget, Campaign, StepReport
from engine.candidates import CandidateSet
from engine.cli.spawn import spawned_server
from engine.clock import SystemClock
from engine.policy import RasterPolicy
from engine.storage import RunWriter, read_run
from instruments.client import ZmqInstrument
from simulators.synthetic import SyntheticOptions, synthetic_microscope

OPTIONS = SyntheticOptions(image_pixels=256, n_channels=256, acquisition_time_s=0.0)
SPECTRUM_BYTES = OPTIONS.n_channels * 4 + 2 * 8 + 8
"""One spectrum's reply payload: float32 channels, its float64 position ``(x, y)`` and timestamp."""
BARE = f"bare ZeroMQ round trip carrying one spectrum ({SPECTRUM_BYTES / 1024:.1f} KiB)"


def _echo(endpoint_q: Any) -> None:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    endpoint_q.put(f"tcp://127.0.0.1:{port}")
    while True:
        frames = sock.recv_multipart()
        if frames[-1] == b"stop":
            break
        size = int(frames[-1]) if frames[-1].isdigit() else 0  # a reply carrying this many bytes
        sock.send_multipart([*frames, bytes(size)] if size else frames)
    sock.close(linger=0)
    ctx.term()


def bare_round_trip(n: int = 3000, reply_bytes: int = 0) -> float:
    """Median seconds of a minimal request/reply over loopback TCP to another process.

    ``reply_bytes``: the reply carries that many bytes besides the request (a batch's spectra).
    """
    q: Any = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_echo, args=(q,), daemon=True)
    proc.start()
    endpoint = q.get(timeout=30)
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    times = []
    for i in range(n):
        t0 = time.perf_counter()
        sock.send_multipart([b'{"id": "%d"}' % i, b"%d" % reply_bytes])
        sock.recv_multipart()
        times.append(time.perf_counter() - t0)
    sock.send_multipart([b"stop"])
    proc.join(timeout=10)
    sock.close(linger=0)
    ctx.term()
    return float(np.median(times[100:]))


def campaign_steps(
    n_steps: int,
    workdir: Path,
    batch_size: int = 1,
    pipeline: bool = False,
    options: SyntheticOptions = OPTIONS,
    exposed: list[int] | None = None,
) -> tuple[list[float], CandidateSet, Path]:
    """Per-step wall times of a raster campaign over ZeroMQ with a durable run (and the run's path).

    ``exposed``: filled with the rows written but not yet durable after each step (group commit).
    """
    clock = SystemClock()
    ctx: zmq.Context[Any] = zmq.Context()
    times: list[float] = []
    name = f"bench-q{batch_size}-{'pipelined' if pipeline else 'sequential'}-{options.acquisition_time_s}.zarr"
    with spawned_server("synthetic", options.model_dump()) as endpoint:
        client = ZmqInstrument(endpoint, ctx, timeout_s=10, queue=pipeline)  # as `dualscope run` does
        desc = client.describe()
        image = client.acquire_image("haadf")
        cands = CandidateSet.from_image_grid(image, desc, 2, 1)
        writer = RunWriter.create(
            workdir / name,
            description=desc,
            images=[image],
            candidates=cands,
            config_toml="",
            clock=clock,
            chunk_rows=256,
        )
        if pipeline:
            writer.group_commit()  # as `dualscope run` does for a pipelined campaign
        last = [time.perf_counter()]

        def on_step(report: StepReport) -> None:
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now
            if exposed is not None:
                exposed.append(report.n_recorded - writer.durable_rows)

        Campaign(
            instrument=client,
            policy=RasterPolicy(),
            recorder=writer,
            candidates=cands,
            spectral_axis=desc.spectral_axis,
            stop_rules=[Budget(n_steps * batch_size)],
            clock=clock,
            request_prefix="bench",
            batch_size=batch_size,
            on_step=on_step,
            pipeline=pipeline,
        ).run()
        writer.close()
        client.close()
    ctx.term()
    return times[50:], cands, workdir / name


def driver_compute(cands: CandidateSet, n: int, batch_size: int = 1, options: SyntheticOptions = OPTIONS) -> float:
    """Median seconds the simulator spends on one batch of spectra (its dwell included), called in process."""
    driver = synthetic_microscope(options, SystemClock())
    times = []
    for i in range(n):
        pos = cands.positions[i * batch_size : (i + 1) * batch_size]
        t0 = time.perf_counter()
        driver.measure(pos)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def run(n_steps: int = 2000, batch_size: int = 16) -> list[Record]:
    """Measure and return the loop records."""
    bare = bare_round_trip(reply_bytes=SPECTRUM_BYTES)
    payload = batch_size * SPECTRUM_BYTES
    bare_q = bare_round_trip(reply_bytes=payload)
    m = machine()
    base = (BARE, bare * 1e6)
    records = []
    with tempfile.TemporaryDirectory() as tmp:
        steps, cands, run_path = campaign_steps(n_steps, Path(tmp))
        stages = read_run(run_path).columns
        steps_q, _, _ = campaign_steps(n_steps // batch_size + 50, Path(tmp), batch_size)
    step, step_q = float(np.median(steps)), float(np.median(steps_q))
    driver, driver_q = driver_compute(cands, 500), driver_compute(cands, 200, batch_size)
    overhead = step - driver
    records.append(
        Record(
            "loop", "overhead per step (step - driver)", overhead * 1e6, "us", *base, overhead / bare, "ratio <= 3", m
        )
    )
    records.append(Record("loop", "campaign step, raster, over loopback", step * 1e6, "us", *base, step / bare, "", m))
    records.append(Record("loop", "simulator compute per spectrum", driver * 1e6, "us", *base, driver / bare, "", m))
    for column, label in (
        ("time_decide_s", "stage: decide + record decision"),
        ("time_measure_s", "stage: measure over ZeroMQ (incl. driver)"),
        ("time_record_s", "stage: make durable (journal fdatasync, block commits)"),
    ):
        value = float(np.median(stages[column][50:]))
        records.append(Record("loop", label, value * 1e6, "us", *base, value / bare, "", m))
    per_batch = step_q - driver_q
    records.append(
        Record(
            "loop",
            f"overhead per batch of {batch_size} spectra (step - driver)",
            per_batch * 1e6,
            "us",
            f"bare ZeroMQ round trip carrying the batch's {payload / 1024:.1f} KiB",
            bare_q * 1e6,
            per_batch / bare_q,
            "ratio <= 3",
            m,
        )
    )
    records.append(
        Record("loop", f"overhead per spectrum, batches of {batch_size}", per_batch / batch_size * 1e6, "us",
               "the same bare round trip per spectrum", bare_q / batch_size * 1e6, per_batch / bare_q, "", m)
    )  # fmt: skip
    return records + pipelined(n_steps, bare, steps, driver)


DWELL_S = 0.02
"""The simulated acquisition of the busy-fraction rows (a short EELS dwell)."""


REPEATS = 3
"""Pipelined runs, each with its own bare round trip: on a shared VM one run's ratio moves by ±30 %."""


def pipelined(n_steps: int, bare: float, sequential: list[float], driver: float) -> list[Record]:
    """Pipelined vs sequential: overhead per step, and the instrument's busy fraction with a 20 ms dwell.

    The overhead of a pipelined step is its wall time less the driver's compute: with one command in
    flight, the decision and the record of the last step overlap the measurement. The median is the
    typical step; the mean counts the steps slowed by a block commit. Each of ``REPEATS`` runs is
    compared with a bare round trip measured just before it, less the driver's compute measured just
    after it (both move with the VM's state by tens of per cent), and the run with the median ratio
    is reported, with the range of all. The busy fraction is the driver's time per spectrum (the 20 ms
    dwell and its compute, measured in process) times the steps, over the wall time of those steps.
    """
    m = machine()
    runs: list[tuple[float, float, list[float], list[int]]] = []
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(REPEATS):
            exposed: list[int] = []
            reference = bare_round_trip(reply_bytes=SPECTRUM_BYTES)
            (folder := Path(tmp) / f"repeat-{k}").mkdir()
            steps_p, cands, _ = campaign_steps(n_steps, folder, pipeline=True, exposed=exposed)
            runs.append((reference, driver_compute(cands, 500), steps_p, exposed))
        slow = OPTIONS.model_copy(update={"acquisition_time_s": DWELL_S})
        busy_steps = {mode: campaign_steps(250, Path(tmp), pipeline=mode, options=slow)[0] for mode in (False, True)}
    medians = [(float(np.median(t)) - d) / b for b, d, t, _ in runs]
    means = [(float(np.mean(t)) - d) / b for b, d, t, _ in runs]
    bare_p, driver_p, steps_p, exposed = runs[int(np.argsort(medians)[len(runs) // 2])]
    overhead_p, mean_p = float(np.median(steps_p)) - driver_p, float(np.mean(steps_p)) - driver_p
    mean_s = float(np.mean(sequential)) - driver
    dwell = driver_compute(cands, 50, options=OPTIONS.model_copy(update={"acquisition_time_s": DWELL_S}))
    busy = {mode: dwell * len(t) / float(np.sum(t)) for mode, t in busy_steps.items()}
    base, base_p = (BARE, bare * 1e6), (f"{BARE}, same run", bare_p * 1e6)
    sequential_overhead = float(np.median(sequential)) - driver
    at_risk = np.asarray(exposed[50:], dtype=np.float64)
    spread = f"median of {REPEATS} runs; ratios {min(medians):.2f}-{max(medians):.2f}"
    spread_mean = f"{REPEATS} runs; ratios {min(means):.2f}-{max(means):.2f}"
    return [
        Record("loop", f"pipelined overhead per step (step - driver; {spread})", overhead_p * 1e6, "us", *base_p,
               overhead_p / bare_p, "ratio <= 3", m),
        Record("loop", f"pipelined overhead per step, mean (block commits included; {spread_mean})", mean_p * 1e6,
               "us", *base_p, mean_p / bare_p, "ratio <= 3", m),
        Record("loop", "sequential overhead per step, mean (block commits included)", mean_s * 1e6, "us", *base,
               mean_s / bare, "", m),
        Record("loop", "pipelined overhead per step vs sequential", overhead_p * 1e6, "us",
               "sequential overhead per step", sequential_overhead * 1e6, overhead_p / sequential_overhead, "", m),
        Record("loop", "pipelined: rows told but not yet durable after a step, median", float(np.median(at_risk)),
               "rows", "the most seen", float(at_risk.max()), float(np.median(at_risk) / max(at_risk.max(), 1)), "", m),
        Record("loop", f"instrument busy fraction, pipelined, {DWELL_S * 1e3:.0f} ms dwell", busy[True], "fraction",
               "sequential", busy[False], busy[True] / busy[False], "value >= 0.95", m),
    ]  # fmt: skip
