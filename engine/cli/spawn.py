"""Start ``dualscope serve`` as a separate process on a random loopback port."""

from __future__ import annotations

import json
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import IO, Any

from engine.errors import InstrumentConnectionError

READY = re.compile(r"^READY (tcp://\S+)$")


@contextmanager
def spawned_server(driver: str, options: Mapping[str, Any], startup_timeout_s: float = 60.0) -> Iterator[str]:
    """Run a server for ``driver`` in a child process; yield its endpoint; stop it on exit.

    The child gets its own session, so a Ctrl-C in the terminal reaches only the
    campaign (which then stops cleanly) and not the server mid-measurement.
    """
    cmd = [
        sys.executable,
        "-m",
        "engine.cli.main",
        "serve",
        driver,
        "--endpoint",
        "tcp://127.0.0.1:*",
        "--options-json",
        json.dumps(dict(options)),
        "--exit-with-parent",
    ]
    with tempfile.TemporaryFile(mode="w+") as errlog:  # a file, so a chatty child never blocks on a full pipe
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=errlog, text=True, start_new_session=True, env=os.environ.copy()
        )
        try:
            yield _wait_ready(proc, startup_timeout_s, errlog)
        finally:
            _stop(proc)


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


def _wait_ready(proc: subprocess.Popen[str], timeout_s: float, errlog: IO[str]) -> str:
    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if not sel.select(timeout=0.2):
                if proc.poll() is not None:
                    break
                continue
            line = proc.stdout.readline()
            if not line:
                break
            if m := READY.match(line.strip()):
                return m.group(1)
    finally:
        sel.close()
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    errlog.seek(0)
    err = errlog.read()[-2000:]
    raise InstrumentConnectionError(f"the instrument server did not start within {timeout_s:g} s:\n{err}")
