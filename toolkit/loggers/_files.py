"""File helpers shared by the file-based sinks (CSV and JSON lines)."""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

__all__ = ["atomic_write_text", "write_hparams_json"]

HPARAMS_FILE = "hparams.json"


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and a rename (readers never see half a file)."""
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def write_hparams_json(save_dir: str, params: dict[str, Any]) -> str:
    """Write ``params`` as ``save_dir/hparams.json`` (non-JSON values as their ``str``); return the path."""
    path = os.path.join(save_dir, HPARAMS_FILE)
    atomic_write_text(path, json.dumps(params, indent=2, default=str) + "\n")
    return path
