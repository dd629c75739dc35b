"""What a newcomer hit (issue 25): each mistake or damage gets a message and the right exit code."""

from __future__ import annotations

import json
import re
import signal
from pathlib import Path

from engine.storage import read_run
from tests.engine.cli.test_cli import _cli, _running, _wait, _write_config
from tests.engine.storage.test_integrity import _closed_run, _record, _truncate_first_chunk
from tests.engine.storage.writer_child import make_run


def test_repair_refuses_a_live_run_and_inspect_shows_its_journal_rows(tmp_path: Path) -> None:
    path = tmp_path / "live.zarr"
    writer = make_run(path, chunk_rows=100)
    for i in range(7):
        _record(writer, i, i, "random")
    try:
        repair = _cli("inspect", str(path), "--repair")
        assert repair.returncode == 2, repair.stdout + repair.stderr
        assert "being written by process" in repair.stderr and "ctl" in repair.stderr
        assert "Traceback" not in repair.stderr
        assert read_run(path).attrs["status"] == "open"  # untouched
        shown = _cli("inspect", str(path), "--json")
        summary = json.loads(shown.stdout)
        assert summary["spectra"] == 7 and summary["spectra_committed"] == 0
        assert any("live run" in n for n in summary["notes"]), summary["notes"]
    finally:
        writer.close()


def test_a_truncated_chunk_is_reported_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _closed_run(path, rows=10)
    _truncate_first_chunk(path, "spectra")
    shown = _cli("inspect", str(path))
    assert shown.returncode == 1, shown.stdout + shown.stderr
    assert "spectra: rows 0-3 cannot be decoded" in shown.stdout.replace("\n", " ")
    repair = _cli("inspect", str(path), "--repair")
    assert repair.returncode == 1 and "cannot recover spectra rows 0-3" in repair.stderr
    report = _cli("report", str(path), "--train-steps", "0")
    assert report.returncode == 2 and "spectra" in report.stderr and "rows 0-3" in report.stderr
    assert "Traceback" not in report.stderr + repair.stderr + shown.stderr


def test_sigterm_stops_after_the_current_measurement_and_closes_the_run(tmp_path: Path) -> None:
    with _running(_write_config(tmp_path)) as (proc, run_path):
        _wait(lambda: re.search(r"[1-9]\d* spectra recorded", _cli("ctl", str(run_path), "status").stdout), 120)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    assert "SIGTERM: stopping after the current measurement" in err
    run = read_run(run_path)
    assert run.attrs["status"] == "closed" and run.attrs["outcome"]["stop_reason"] == "stopped by the operator"
    assert 0 < run.n < 1000


def test_ctrl_c_during_the_pre_training_stops_it_and_ctl_reaches_it(tmp_path: Path) -> None:
    policy = 'name = "dualvae-bo"\npretrain_steps = 1000000\npatch_px = 8'
    with _running(_write_config(tmp_path, policy)) as (proc, run_path):  # the control socket answers: run made first
        status = _cli("ctl", str(run_path), "status")
        assert "0 spectra recorded" in status.stdout, status.stdout + status.stderr
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, out + err
    run = read_run(run_path)
    reason = run.attrs["outcome"]["stop_reason"]
    assert run.attrs["status"] == "closed" and run.n == 0
    assert reason.startswith("stopped by the operator while pre-training the dual VAE on"), reason
    assert re.search(r"Time:\s+[\d.:]+( s)? pre-training the dual VAE on \d+ patches", out), out


def test_mistakes_are_messages_before_anything_starts(tmp_path: Path) -> None:
    served = _cli("serve", "nosuchdriver")
    assert served.returncode == 2 and "unknown driver 'nosuchdriver'; available:" in served.stderr
    garbage = _cli("serve", "synthetic", "--endpoint", "garbage")
    assert garbage.returncode == 2 and "malformed endpoint 'garbage'" in garbage.stderr
    (tmp_path / "afile").write_text("")
    for out_dir, said in (("afile", "is a file, not a directory"), ("afile/x", "cannot be created")):
        cfg = tmp_path / "o.toml"
        cfg.write_text(
            _write_config(tmp_path).read_text().replace(f'output_dir = "{tmp_path}"', f'output_dir = "{out_dir}"')
        )
        result = _cli("run", str(cfg), cwd=tmp_path)
        assert result.returncode == 2 and said in result.stderr, result.stderr
        assert "Instrument:" not in result.stdout  # refused before the instrument was started
    sem = tmp_path / "sem.toml"
    sem.write_text(
        _write_config(tmp_path).read_text().replace('mode = "local"', 'mode = "spawn"\nimage_channel = "sem"')
    )
    result = _cli("run", str(sem))
    assert result.returncode == 2 and "image_channel = 'sem', but driver 'synthetic' acquires 'haadf'" in result.stderr
    assert "Instrument:" not in result.stdout and not list(tmp_path.glob("ctrlc-*.zarr"))
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    result = _cli("run", str(empty))
    assert result.returncode == 2 and "missing [instrument], [policy], [stop]" in result.stderr
    assert "--defaults" in result.stderr
    assert all("Traceback" not in r.stderr for r in (served, garbage, result))


def test_defaults_run_a_file_that_leaves_tables_out(tmp_path: Path) -> None:
    cfg = tmp_path / "short.toml"
    cfg.write_text(f'[run]\noutput_dir = "{tmp_path}"\nfigure = false\n[stop]\nbudget = 3\n')
    result = _cli("run", str(cfg), "--defaults")
    assert result.returncode == 0, result.stdout + result.stderr
    (run_path,) = tmp_path.glob("run-*.zarr")
    assert read_run(run_path).n == 3
