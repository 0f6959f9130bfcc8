"""The docs site builds with ``mkdocs build --strict``: no broken link or anchor, no page
left out of the nav, no nav entry without its page. The skeletons of CONTRIBUTING.md run.
"""

from __future__ import annotations

import re
import subprocess
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def _nav_pages(nav: object) -> list[str]:
    """Every page path named in a mkdocs ``nav`` (nested lists and dicts)."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for item in nav for page in _nav_pages(item)]
    if isinstance(nav, dict):
        return [page for value in nav.values() for page in _nav_pages(value)]
    return []


def test_every_docs_page_is_in_the_nav() -> None:
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text(encoding="utf-8"))
    in_nav = _nav_pages(config["nav"])
    pages = sorted(p.name for p in (ROOT / "docs").glob("*.md"))
    missing = [p for p in pages if p not in in_nav]
    assert missing == [], f"docs pages missing from the nav of mkdocs.yml: {missing}"
    dangling = [p for p in in_nav if not (ROOT / "docs" / p).is_file()]
    assert dangling == [], f"mkdocs.yml nav names pages that do not exist in docs/: {dangling}"
    assert len(in_nav) == len(set(in_nav)), "a page appears twice in the nav"


def test_mkdocs_build_strict(tmp_path: Path) -> None:
    pytest.importorskip("mkdocs")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(ROOT / "mkdocs.yml"),
            "--site-dir",
            str(tmp_path / "site"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    log = proc.stdout + proc.stderr
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert proc.returncode == 0 and not warnings, f"mkdocs build --strict failed:\n{log}"
    assert (tmp_path / "site" / "index.html").is_file()
    assert (tmp_path / "site" / "arguments_reference" / "index.html").is_file()


def test_contributing_skeletons_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = BLOCK.findall((ROOT / "CONTRIBUTING.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 4, "CONTRIBUTING.md lost its Strategy / Precision / Logger / CheckpointIO skeletons"
    monkeypatch.chdir(tmp_path)
    module = types.ModuleType("doc_contributing")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for i, block in enumerate(blocks):
        exec(compile(block, f"CONTRIBUTING.md[block {i}]", "exec"), module.__dict__)
