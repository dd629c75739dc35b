"""The README and docs/ stay true to the tree: every relative link and every source path they name exists."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
PATH = re.compile(r"`((?:engine|instruments|simulators|tests|examples|benchmarks)/[\w/.-]+\.(?:py|toml))`")
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_links_and_paths_exist(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    missing = [m for m in LINK.findall(text) if "://" not in m and not (page.parent / m).exists()]
    missing += [p for p in PATH.findall(text) if not (ROOT / p).exists()]
    assert not missing, f"{page.relative_to(ROOT)} names what does not exist: {sorted(set(missing))}"


def test_readme_links_every_docs_page() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"index.md"}  # index.md: the site's home
    assert pages, "docs/ has no pages"
    assert not [p for p in pages if f"docs/{p}" not in readme], "a docs page is not linked from the README"
