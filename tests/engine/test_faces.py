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

import pytest

FACES = ["campaign", "design", "explore", "io", "policy", "report", "storage", "surrogate"]


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


@pytest.mark.parametrize("name", _examples())
def test_docstring_examples_run(name: str) -> None:
    face, attr = name.rsplit(".", 1)
    obj = getattr(importlib.import_module(face), attr)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in doctest.DocTestFinder(recurse=False).find(obj, name, globs={attr: obj}):
        runner.run(test)
    assert runner.tries > 0
    assert runner.failures == 0, f"the Example of {name} failed (run with -s to see it)"


def test_examples_exist_for_the_factories_and_the_contract_kit() -> None:
    names = set(_examples())
    assert {"engine.policy.build_policy", "engine.policy.build_scalariser", "engine.policy.make_trainer"} <= names


def test_light_commands_do_not_import_the_networks() -> None:
    """`dualscope --help` and a spawned server stay light: the lazy faces do not pull in torch or botorch."""
    code = "import sys, engine.cli.main; print(sorted(m for m in ('torch', 'botorch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]"
