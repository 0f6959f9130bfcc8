"""Runs the python examples of docs/data.md."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "data.md"


def test_docs_data_examples_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/data.md has no python example"
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {"__name__": "__docs__"})
    assert "batches left" in capsys.readouterr().out
