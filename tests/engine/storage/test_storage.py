"""Zarr runs: round trips, commit point, recovery, xarray, corrupt files, and the journal format."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.clock import SystemClock
from engine.decisions import Decision, Proposal, StepTimings
from engine.errors import RunCorrupt, RunStorageError
from engine.storage import RunWriter, check_run, read_run, recover_run
from engine.storage._journal import decode_entries, encode_entry
from engine.types import Measurement
from tests.engine.storage.writer_child import CHANNELS, abandon, expected_position, expected_spectrum, make_run


def _record(writer: RunWriter, start: int, k: int, step: int) -> int:
    idx = np.arange(start, start + k, dtype=np.int64)
    decision = Decision(
        step,
        f"r{step}",
        "random",
        Proposal(idx, np.linspace(0, 1, k), model_version=3, runner_up_values=np.array([0.5, 0.25])),
        5.0,
    )
    writer.record_decision(decision)
    m = Measurement(
        f"r{step}",
        np.stack([expected_position(j) for j in idx]),
        np.stack([expected_spectrum(j) for j in idx]),
        1.0e9 + idx.astype(float),
        0.01,
    )
    return writer.record_measurement(decision, m, StepTimings(0.001, 0.002))


def _fill(path: Path, rows: int, chunk_rows: int = 8, close: bool = True) -> RunWriter:
    writer = make_run(path, chunk_rows)
    i = step = 0
    while i < rows:
        k = min(1 + step % 3, rows - i)
        assert _record(writer, i, k, step) == i + k
        i += k
        step += 1
    if close:
        writer.close(outcome={"stop_reason": "test"})
    return writer


def test_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _fill(path, 37)
    run = read_run(path)
    assert run.n == 37 and run.spectra.shape == (37, CHANNELS)
    for i in range(37):
        np.testing.assert_array_equal(run.spectra[i], expected_spectrum(i))
        np.testing.assert_array_equal(run.positions[i], expected_position(i))
    assert run.attrs["status"] == "closed" and run.attrs["outcome"]["stop_reason"] == "test"
    assert run.policy_names == ["random"]
    assert set(run.columns["model_version"]) == {3}
    ups = run.columns["runner_up_values"]
    assert ups.shape == (37, 5)
    np.testing.assert_array_equal(ups[:, :2], np.tile([0.5, 0.25], (37, 1)))
    assert np.all(np.isnan(ups[:, 2:]))
    assert np.all(run.columns["time_record_s"] > 0)
    np.testing.assert_allclose(run.columns["time_decide_s"], 0.001)
    assert run.spectral_values.shape == (CHANNELS,)
    assert run.images["haadf"].data.shape == (40, 40)
    assert all(rows == 37 for rows in run.array_rows.values())


def test_a_torn_attribute_write_leaves_the_run_readable(tmp_path: Path) -> None:
    # SIGKILL during zarr's atomic write of zarr.json leaves "zarr.<id>.partial" beside it; zarr then
    # lists it as a group member (found by the kill test): reading must not trip over it
    path = tmp_path / "r.zarr"
    _fill(path, 5)
    (path / "zarr.446574f4601e418696a024af64cec787.partial").write_bytes(b'{"zarr_format": 3, "node_ty')
    run = read_run(path)
    assert run.n == 5 and run.images["haadf"].data.shape == (40, 40)


def test_reader_sees_only_committed_rows_while_writing(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    writer = _fill(path, 10, chunk_rows=4, close=False)
    live = read_run(path)
    # 10 rows in blocks of 1-3 (1, 2, 3, 1, 2, 1): a block is flushed when 4 or more wait, so 6 rows are
    # committed (after 1+2+3) and the last 4 are still in the journal
    assert live.n == writer.committed_rows == 6 < writer.n_recorded == 10
    writer.close()
    assert read_run(path).n == 10


def test_opens_with_plain_zarr_and_xarray(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _fill(path, 12)
    group = zarr.open_group(path, mode="r")
    assert group["spectra"].shape == (12, CHANNELS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path, consolidated=False)
    assert ds.sizes["measurement"] == 12
    assert ds["spectra"].dims == ("measurement", "energy_loss")
    assert ds["energy_loss"].attrs["units"] == "eV"
    assert np.issubdtype(ds["timestamps"].dtype, np.datetime64)
    np.testing.assert_array_equal(ds["spectra"].values[5], expected_spectrum(5))


def test_recovery_replays_journal_and_logs_in_flight(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    writer = _fill(path, 10, chunk_rows=4, close=False)
    committed = writer.committed_rows
    # a decision whose command went out but whose spectrum never came back
    writer.record_decision(Decision(99, "lost-cmd", "random", Proposal(np.array([50]), np.array([np.nan])), 0.0))
    abandon(writer)  # the process "dies": no close, the journal holds rows beyond the commit point
    _, integrity = check_run(path)
    assert integrity.ok and integrity.journal_rows == 10 - committed
    report, _ = recover_run(path, SystemClock())
    assert report.replayed_rows == 10 - committed and report.in_flight == ["lost-cmd"]
    run = read_run(path)
    assert run.n == 10 and run.attrs["status"] == "interrupted"
    assert run.attrs["recoveries"][0]["in_flight"] == ["lost-cmd"]
    assert np.isnan(run.columns["time_record_s"][committed:]).all(), "recovered rows have no record time"


def test_recovery_drops_a_torn_last_entry(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    abandon(_fill(path, 5, chunk_rows=100, close=False))
    wal = path / "journal" / "wal.bin"
    data = wal.read_bytes()
    wal.write_bytes(data[:-7])  # the last write was cut by the crash
    report, _ = recover_run(path, SystemClock())
    assert report.torn_bytes > 0
    run = read_run(path)
    assert 0 < run.n < 5
    for i in range(run.n):
        np.testing.assert_array_equal(run.spectra[i], expected_spectrum(i))


def test_resume_appends_after_recovery(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    abandon(_fill(path, 6, chunk_rows=4, close=False))
    _, writer = recover_run(path, SystemClock(), keep_open=True)
    assert writer is not None and writer.n_recorded == 6
    _record(writer, 6, 2, 100)
    writer.close()
    run = read_run(path)
    assert run.n == 8
    np.testing.assert_array_equal(run.spectra[7], expected_spectrum(7))


def test_missing_path_and_not_a_run(tmp_path: Path) -> None:
    with pytest.raises(RunStorageError, match="no run at"):
        read_run(tmp_path / "nothing.zarr")
    zarr.open_group(tmp_path / "plain.zarr", mode="w")
    with pytest.raises(RunStorageError, match="not a dualscope run"):
        read_run(tmp_path / "plain.zarr")


def test_corrupt_metadata_is_named(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _fill(path, 3)
    (path / "zarr.json").write_text("{ this is not json")
    with pytest.raises(RunCorrupt, match="cannot open"):
        read_run(path)


def test_missing_array_is_named(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _fill(path, 3)
    import shutil

    shutil.rmtree(path / "positions")
    with pytest.raises(RunCorrupt, match="positions"):
        read_run(path)


def test_future_format_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _fill(path, 3)
    meta = json.loads((path / "zarr.json").read_text())
    meta["attributes"]["dualscope"]["format_version"] = 99
    (path / "zarr.json").write_text(json.dumps(meta))
    with pytest.raises(RunStorageError, match="format version 99"):
        read_run(path)


def test_create_refuses_existing_path(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _fill(path, 1)
    with pytest.raises(RunStorageError, match="already exists"):
        make_run(path, 4)


def test_closed_writer_refuses_more(tmp_path: Path) -> None:
    writer = _fill(tmp_path / "r.zarr", 2)
    with pytest.raises(RunStorageError, match="closed"):
        _record(writer, 2, 1, 9)


def test_integrity_flags_nan_rows(tmp_path: Path) -> None:
    path = tmp_path / "r.zarr"
    _fill(path, 4)
    arr = zarr.open_array(path / "spectra", mode="r+")
    arr[2, 3] = np.nan
    _, report = check_run(path)
    assert not report.ok and "NaN" in report.problems[0]


entries = st.lists(
    st.tuples(
        st.dictionaries(
            st.sampled_from(["kind", "first_row", "request_id"]), st.integers(0, 100) | st.text(max_size=5)
        ),
        st.integers(0, 5),
    ),
    max_size=5,
)


@settings(max_examples=60, deadline=None)
@given(entries, st.data())
def test_journal_round_trip_and_any_truncation_leaves_a_prefix(items: list, data: st.DataObject) -> None:
    blobs = [encode_entry(meta, {"a": np.arange(k, dtype=np.float32), "b": np.ones((k, 2))}) for meta, k in items]
    stream = b"".join(blobs)
    decoded, valid = decode_entries(stream)
    assert valid == len(stream) and len(decoded) == len(items)
    for (meta, k), e in zip(items, decoded, strict=True):
        assert e.meta == meta
        np.testing.assert_array_equal(e.arrays["a"], np.arange(k, dtype=np.float32))
    cut = data.draw(st.integers(0, len(stream)))
    prefix, valid = decode_entries(stream[:cut])
    boundaries = np.cumsum([0, *[len(b) for b in blobs]])
    assert valid in boundaries and valid <= cut
    assert len(prefix) == int(np.searchsorted(boundaries, valid))
    if stream:
        flipped = bytearray(stream)
        flipped[min(cut, len(stream) - 1)] ^= 0xFF
        damaged, _ = decode_entries(bytes(flipped))
        assert len(damaged) <= len(items)
