"""Runs the python example of docs/checkpointing.md."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "checkpointing.md"


def test_docs_checkpointing_example_runs(capsys) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert blocks, "docs/checkpointing.md has no python example"
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), {"__name__": "__docs__"})
    out = capsys.readouterr().out
    assert "at step 300" in out
    assert "refused:" in out and "model.safetensors fails its sha256 checksum" in out


def test_module_docstring_examples_run() -> None:
    import doctest

    import toolkit.checkpoint.async_io
    import toolkit.checkpoint.io
    import toolkit.checkpoint.manager

    for module in (toolkit.checkpoint.io, toolkit.checkpoint.async_io, toolkit.checkpoint.manager):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0, module.__name__
