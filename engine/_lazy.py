"""Lazy faces: a subpackage's ``__init__`` names its public API without importing torch or botorch up front.

A face lists its names as ordinary imports under ``if TYPE_CHECKING:`` (so type checkers, import-linter
and readers see them) and ends with ``__getattr__, __dir__ = lazy_face(__name__, __file__)``; each
name's module is imported on first use (PEP 562). ``dualscope --help`` and a spawned instrument server
then start without loading the networks.
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any


def lazy_face(package: str, init_file: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for the face ``package`` whose ``__init__.py`` is ``init_file``.

    Args:
        package: the package's ``__name__``.
        init_file: the package's ``__file__``; its ``if TYPE_CHECKING:`` block of
            ``from MODULE import NAME`` statements says where each name lives.

    Returns:
        ``(__getattr__, __dir__)`` to assign in the package's namespace.

    Examples:
        >>> import engine.policy
        >>> engine.policy.RandomPolicy.__module__
        'engine.policy._baselines'
    """
    where = _names_under_type_checking(Path(init_file))

    def getattr_(name: str) -> Any:
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, original = where[name]
        return getattr(importlib.import_module(module), original)

    def dir_() -> list[str]:
        return sorted(where)

    return getattr_, dir_


def _names_under_type_checking(init_file: Path) -> dict[str, tuple[str, str]]:
    """Name → (module, name there) of every ``from MODULE import NAME [as ALIAS]`` under ``if TYPE_CHECKING:``."""
    tree = ast.parse(init_file.read_text(encoding="utf-8"))
    where: dict[str, tuple[str, str]] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.module:
                    for alias in stmt.names:
                        where[alias.asname or alias.name] = (stmt.module, alias.name)
    return where
