"""``engine.Experiment``: a campaign from Python, and ask/tell for labs whose own code drives the microscope."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

import engine
from engine.clock import SystemClock
from engine.config import parse_config
from engine.errors import ConfigError
from engine.storage import read_run
from simulators.synthetic import SyntheticOptions, synthetic_microscope

pytestmark = pytest.mark.timeout(300)

OPTIONS = {"image_pixels": 32, "n_channels": 32, "acquisition_time_s": 0.0}


def _tables(tmp_path: Path, **policy: Any) -> dict[str, Any]:
    return {
        "run": {"output_dir": str(tmp_path), "figure": False, "name": "py"},
        "instrument": {"mode": "local", "driver": "synthetic", "options": OPTIONS},
        "candidates": {"stride_px": 2, "margin_px": 1},
        "policy": {"name": "random", **policy},
        "stop": {"budget": 8},
    }


def test_run_from_python_records_the_campaign_and_its_configuration(tmp_path: Path) -> None:
    exp = engine.Experiment(_tables(tmp_path))
    steps: list[int] = []
    result = exp.run(on_step=lambda report: steps.append(report.n_recorded))
    assert result.n_recorded == 8 and steps == list(range(1, 9)) and "budget" in result.stop_reason
    data = exp.results
    assert data.sizes["measurement"] == 8 and data["x"].attrs["units"] == "nm"
    stored = read_run(exp.run_path).attrs["config_toml"]
    assert parse_config(stored) == exp.config  # the run can be resumed from what it stored


def test_from_toml_with_progress_bars(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        f'[run]\noutput_dir = "{tmp_path}"\nfigure = false\n[instrument]\nmode = "local"\ndriver = "synthetic"\n'
        '[instrument.options]\nimage_pixels = 32\nn_channels = 32\n[policy]\nname = "raster"\n[stop]\nbudget = 5\n'
    )
    exp = engine.Experiment.from_toml(cfg)
    assert exp.run(progress=True).n_recorded == 5
    assert exp.config_text == cfg.read_text()


def test_a_bad_table_names_the_key_and_nothing_runs(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"policy\.nmae: unknown key"):
        engine.Experiment({"policy": {"nmae": "random"}})
    with pytest.raises(ConfigError, match="has not run yet"):
        _ = engine.Experiment(_tables(tmp_path)).run_path


def _your_microscope() -> Any:
    """What a lab's own acquisition code would talk to: here, the synthetic microscope called directly."""
    return synthetic_microscope(SyntheticOptions(**OPTIONS), SystemClock())


def test_ask_tell_with_your_own_acquisition_code(tmp_path: Path) -> None:
    scope = _your_microscope()
    image, axis = scope.acquire_image("haadf"), scope.describe().spectral_axis
    tables = _tables(tmp_path, name="gp-position", initial=4, training="inline")
    tables["stop"] = {"budget": 12}
    suggested = []
    with engine.Experiment.ask_tell(image, axis, tables) as exp:
        while (positions := exp.suggest()).size:
            suggested.append(positions)
            exp.observe(scope.measure(positions).spectra)
    assert exp.result is not None and exp.result.n_recorded == 12 and "budget" in exp.result.stop_reason
    run = read_run(exp.run_path)
    assert run.n == 12 and np.allclose(run.positions, np.concatenate(suggested))
    versions = np.asarray(run.columns["model_version"])
    assert (versions[:4] == -1).all() and (versions[5:] >= 1).all()  # the GP decides after the initial four
    assert exp.results.sizes["measurement"] == 12


def test_ask_tell_refuses_mistakes_and_close_keeps_what_was_observed(tmp_path: Path) -> None:
    scope = _your_microscope()
    image, axis = scope.acquire_image("haadf"), scope.describe().spectral_axis
    exp = engine.Experiment.ask_tell(image, axis, _tables(tmp_path))
    with pytest.raises(ConfigError, match="call suggest"):
        exp.observe(np.zeros((1, 32)))
    positions = exp.suggest()
    with pytest.raises(ConfigError, match="observe"):
        exp.suggest()
    with pytest.raises(ConfigError, match=r"shape \(1, 32\)"):
        exp.observe(np.zeros((1, 31)))
    with pytest.raises(ConfigError, match="NaN"):
        exp.observe(np.full((1, 32), np.nan))
    exp.observe(scope.measure(positions).spectra)
    exp.suggest()  # suggested, never observed
    result = exp.close()
    assert result is not None and result.n_recorded == 1 and "operator" in result.stop_reason
    run = read_run(exp.run_path)
    assert run.n == 1 and run.attrs["status"] == "closed"


def test_the_readme_python_quick_start_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's Python block, with a small local configuration in place of the demo's."""
    readme = (Path(__file__).resolve().parents[3] / "README.md").read_text(encoding="utf-8")
    block = readme.split("```python\n", 1)[1].split("```", 1)[0]
    assert "engine.Experiment.from_toml" in block and "exp.results" in block
    cfg = tmp_path / "small.toml"
    cfg.write_text(
        f'[run]\noutput_dir = "{tmp_path}"\nfigure = false\n[instrument]\nmode = "local"\ndriver = "synthetic"\n'
        '[instrument.options]\nimage_pixels = 32\nn_channels = 32\n[policy]\nname = "random"\n[stop]\nbudget = 4\n'
    )
    namespace: dict[str, Any] = {}
    exec(block.replace("examples/demo.toml", str(cfg)), namespace)
    assert namespace["exp"].results.sizes["measurement"] == 4


def test_your_own_acquisition_and_scalariser_from_python(tmp_path: Path) -> None:
    """A botorch factory and a plain function drive a campaign; the run names them; resume refuses to guess."""
    from botorch.acquisition import ProbabilityOfImprovement

    from engine.cli.resuming import open_for_resume
    from engine.errors import ResumeError
    from engine.storage import RunWriter

    calls = []

    def pi(model: Any, context: Any) -> ProbabilityOfImprovement:
        calls.append(context.best_f)
        return ProbabilityOfImprovement(model, best_f=context.best_f)

    tables = _tables(tmp_path, name="gp-position", initial=4, training="inline")
    tables["stop"] = {"budget": 10}
    exp = engine.Experiment(tables, acquisition=pi, scalariser=lambda spectra, axis: spectra[:, :8].sum(axis=1))
    assert exp.run().n_recorded == 10
    run = read_run(exp.run_path)
    values = np.asarray(run.columns["acquisition_value"])[5:]
    assert len(calls) >= 5 and np.all((values >= 0) & (values <= 1))  # PI's probabilities were recorded
    parts = run.attrs["python_parts"]
    assert parts["acquisition"].endswith(".pi") and parts["scalariser"].endswith("<lambda>")
    from engine.report import run_summary
    from engine.storage import check_run

    summary = run_summary(*check_run(exp.run_path))
    assert "acquisition python:" in summary["python_parts"] and summary["training"] == "-"
    # a run started from Python and killed: `dualscope resume` says it cannot rebuild the Python parts
    scope = _your_microscope()
    desc, image = scope.describe(), scope.acquire_image("haadf")
    from engine.candidates import CandidateSet

    writer = RunWriter.create(tmp_path / "killed.zarr", description=desc, images=[image],
                              candidates=CandidateSet.from_image_grid(image, desc, 4, 2),
                              config_toml=exp.config_text, clock=SystemClock())  # fmt: skip
    writer.note_python_parts(parts)
    writer.release(status="interrupted")
    with pytest.raises(ResumeError, match=r"run from Python with its own acquisition python:.*\.pi"):
        open_for_resume(tmp_path / "killed.zarr", SystemClock())


def test_step_by_step_then_close(tmp_path: Path) -> None:
    with engine.Experiment(_tables(tmp_path, name="raster")) as exp:
        reports = [exp.step() for _ in range(3)]
        assert [r.n_recorded for r in reports if r is not None] == [1, 2, 3]
        assert reports[-1] is not None and reports[-1].measurement.spectra.shape == (1, 32)
    run = read_run(exp.run_path)
    assert run.n == 3 and run.attrs["status"] == "closed"
    assert "operator" in run.attrs["outcome"]["stop_reason"]
    assert exp.step() is None  # over


def test_stepping_to_the_end_of_the_budget(tmp_path: Path) -> None:
    exp = engine.Experiment(_tables(tmp_path))
    counts = []
    while (report := exp.step()) is not None:
        counts.append(report.n_recorded)
    assert counts == list(range(1, 9)) and exp.results.sizes["measurement"] == 8
    exp.close()  # nothing left to close
