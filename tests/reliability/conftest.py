"""Fixtures of the reliability suites: the tiny models and builders of the Trainer tests
(``tests/trainer/conftest.py``, loaded by path so both suites share one copy)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

_spec = importlib.util.spec_from_file_location(
    "toolkit_reliability_helpers", Path(__file__).resolve().parents[1] / "trainer" / "conftest.py"
)
helpers: ModuleType = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(helpers)


@pytest.fixture(scope="session")
def h() -> ModuleType:
    """The shared tiny models, datasets and argument builders."""
    return helpers
