"""Tests of the plumbing the recipes share (recipes/common.py)."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from recipes.common import build_recipe_parser, parse_recipe_args  # noqa: E402


@dataclass
class Opts:
    width: int = 8
    name: str = field(default="a", metadata={"help": "A name."})


DEFAULTS = {"width": 32}


def test_parser_takes_recipe_defaults_and_doc_summary():
    parser = build_recipe_parser((Opts,), DEFAULTS, "First paragraph.\n\nMore text.")
    assert parser.description == "First paragraph."
    (opts,) = parse_recipe_args(parser, DEFAULTS, [])
    assert (opts.width, opts.name) == (32, "a")
    (opts,) = parse_recipe_args(parser, DEFAULTS, ["--width", "5"])
    assert opts.width == 5


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file_values_over_recipe_defaults(tmp_path, suffix):
    path = tmp_path / f"config{suffix}"
    if suffix == ".yaml":
        yaml = pytest.importorskip("yaml")
        path.write_text(yaml.safe_dump({"name": "b"}))
    else:
        path.write_text(json.dumps({"name": "b"}))
    parser = build_recipe_parser((Opts,), DEFAULTS, None)
    (opts,) = parse_recipe_args(parser, DEFAULTS, [str(path)])
    assert (opts.width, opts.name) == (32, "b")  # the file's value, and the recipe default under it
    path.write_text(json.dumps({"width": 3}))
    assert parse_recipe_args(parser, DEFAULTS, [str(path)])[0].width == 3


def test_config_file_must_hold_a_mapping(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="must hold a mapping"):
        parse_recipe_args(build_recipe_parser((Opts,), {}, None), {}, [str(path)])
