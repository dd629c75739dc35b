"""The public faces of the engine's subpackages: every name resolves, is documented, and its Example runs.

This pins the public API (as httpx's and zarr's API tests do): a name removed from a face, or one
listed without a module behind it, fails here; so does a public name without a docstring.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.campaign import Budget, Campaign
from engine.candidates import CandidateSet
from engine.clock import SystemClock
from engine.policy import RandomPolicy
from engine.storage import RunWriter
from instruments.local import LocalInstrument
from simulators.synthetic import SyntheticOptions, synthetic_microscope

FACES = ["campaign", "design", "explore", "io", "policy", "report", "storage", "surrogate", "view"]


@pytest.mark.parametrize("face", FACES)
def test_every_public_name_resolves_and_is_documented(face: str) -> None:
    module = importlib.import_module(f"engine.{face}")
    assert module.__doc__, f"engine.{face} has no module docstring"
    assert len(module.__all__) == len(set(module.__all__)), "a name is listed twice"
    undocumented = []
    for name in module.__all__:
        obj = getattr(module, name)  # raises AttributeError for a name without a module behind it
        if (inspect.isclass(obj) or inspect.isfunction(obj)) and not inspect.getdoc(obj):
            undocumented.append(name)
    assert not undocumented, f"engine.{face}: public names without a docstring: {undocumented}"
    if hasattr(module, "__getattr__"):  # a lazy face: what it imports under TYPE_CHECKING is what it lists
        assert sorted(dir(module)) == sorted(module.__all__)


def _examples() -> list[str]:
    """``engine.FACE.NAME`` of every public class or function whose docstring has an Example."""
    found = []
    for face in FACES:
        module = importlib.import_module(f"engine.{face}")
        for name in module.__all__:
            obj = getattr(module, name)
            if (inspect.isclass(obj) or inspect.isfunction(obj)) and ">>>" in (inspect.getdoc(obj) or ""):
                found.append(f"engine.{face}.{name}")
    return found


@pytest.fixture(scope="module")
def run_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run the Examples read: 20 spectra of the synthetic microscope, closed (see Campaign's Example)."""
    clock = SystemClock()
    options = SyntheticOptions(image_pixels=32, n_channels=64, acquisition_time_s=0.002)
    scope = LocalInstrument(synthetic_microscope(options, clock))
    desc, image = scope.describe(), scope.acquire_image("haadf")
    candidates = CandidateSet.from_image_grid(image, desc, 4, 2)
    path = tmp_path_factory.mktemp("examples") / "run.zarr"
    writer = RunWriter.create(
        path, description=desc, images=[image], candidates=candidates, config_toml="", clock=clock
    )
    result = Campaign(
        instrument=scope, policy=RandomPolicy(np.random.default_rng(0)), recorder=writer, candidates=candidates,
        spectral_axis=desc.spectral_axis, stop_rules=[Budget(20)], clock=clock, request_prefix="example",
    ).run()  # fmt: skip
    writer.close(outcome={"stop_reason": result.stop_reason})
    return path


def _run(test: doctest.DocTest) -> doctest.DocTestRunner:
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    runner.run(test, clear_globs=False)
    return runner


def _namespace(face: str, run_path: Path) -> dict[str, object]:
    """The face's public names and ``run_path``, after the setup in the face's own docstring."""
    module = importlib.import_module(face)
    globs: dict[str, object] = {n: getattr(module, n) for n in module.__all__} | {"run_path": run_path}
    for test in doctest.DocTestFinder(recurse=False).find(module, face, globs=globs):
        runner = _run(test)
        assert runner.failures == 0, f"the setup in the docstring of {face} failed (run with -s to see it)"
        globs = test.globs
    return globs


@pytest.mark.parametrize("name", _examples())
def test_docstring_examples_run(name: str, run_path: Path) -> None:
    """Each Example runs in its face's namespace, after the face docstring's setup, with ``run_path``."""
    face, attr = name.rsplit(".", 1)
    obj = getattr(importlib.import_module(face), attr)
    tests = doctest.DocTestFinder(recurse=False).find(obj, name, globs=_namespace(face, run_path))
    assert tests
    for test in tests:
        runner = _run(test)
        assert runner.tries > 0
        assert runner.failures == 0, f"the Example of {name} failed (run with -s to see it)"


@pytest.mark.parametrize("face", FACES)
def test_every_public_class_and_function_has_an_example(face: str) -> None:
    module = importlib.import_module(f"engine.{face}")
    callables = [
        n for n in module.__all__ if inspect.isclass(getattr(module, n)) or inspect.isfunction(getattr(module, n))
    ]
    without = [n for n in callables if f"engine.{face}.{n}" not in set(_examples())]
    assert not without, f"engine.{face}: public names without an Example: {without}"


def _sections_missing(obj: object) -> list[str]:
    """The docstring sections a public class or function lacks: Args (or Attributes), Returns (or Yields)."""
    doc = inspect.getdoc(obj) or ""
    if inspect.isclass(obj):
        if getattr(obj, "_is_protocol", False) or issubclass(obj, BaseException):
            return []  # a protocol documents its methods; an error, its message
        params = [p for p in inspect.signature(obj).parameters if p != "self"]
        return ["Args or Attributes"] if params and "Args:" not in doc and "Attributes:" not in doc else []
    assert inspect.isfunction(obj)
    signature = inspect.signature(obj)
    missing = ["Args"] if signature.parameters and "Args:" not in doc else []
    returns = signature.return_annotation not in (None, "None", inspect.Signature.empty)
    if returns and "Returns:" not in doc and "Yields:" not in doc:
        missing.append("Returns")
    return missing


@pytest.mark.parametrize("face", FACES)
def test_every_public_class_and_function_documents_its_arguments_and_result(face: str) -> None:
    module = importlib.import_module(f"engine.{face}")
    lacking = {}
    for name in module.__all__:
        obj = getattr(module, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            missing = _sections_missing(obj)
            if missing:
                lacking[name] = missing
    assert not lacking, f"engine.{face}: docstrings without their sections: {lacking}"


def test_light_commands_do_not_import_the_networks() -> None:
    """`dualscope --help` and a spawned server stay light: the lazy faces do not pull in torch or botorch."""
    code = "import sys, engine.cli.main; print(sorted(m for m in ('torch', 'botorch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [["--version"], ["ctl", "RUN", "status"], ["inspect", "RUN", "--json"]])
def test_light_commands_run_without_torch(args: list[str], run_path: Path) -> None:
    """`--version`, `ctl status` and `inspect` answer in well under a second on an idle machine: no torch, botorch
    or matplotlib is imported on their way (the import of torch alone took 5.8 s on a busy machine)."""
    argv = [str(run_path) if a == "RUN" else a for a in args]
    code = (
        "import sys, atexit\n"
        "heavy = ('torch', 'botorch', 'matplotlib')\n"
        "atexit.register(lambda: print('HEAVY', sorted(m for m in heavy if m in sys.modules)))\n"
        "from engine.cli.main import main\n"
        f"sys.argv = ['dualscope', *{argv!r}]\n"
        "main()\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in result.stdout, result.stdout[-500:] + result.stderr[-2000:]
