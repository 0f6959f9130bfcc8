"""Runs the python example of docs/optim.md."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "optim.md"


def test_docs_optim_example_runs(capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/optim.md has no python example"
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {"__name__": "__docs__"})
    out = capsys.readouterr().out
    assert "[2, 4]" in out
    assert "final lr 0.0000" in out
