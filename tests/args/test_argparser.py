"""Tests for toolkit.argparser.HfArgumentParser."""

import argparse
import enum
import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, Optional, Union

import pytest

from toolkit.argparser import HfArgumentParser, string_to_bool
from toolkit.types import FSDPOption, IntervalStrategy

DOCS_PAGE = Path(__file__).resolve().parents[2] / "docs" / "argparser.md"


class Color(enum.Enum):
    RED = 1
    GREEN = 2


@dataclass
class Basic:
    name: str
    count: int = 3
    rate: float = 0.5
    path: Path = Path("out")
    learning_rate: float = 1e-3
    note: str = field(default="x", metadata={"help": "A note; 10% of it.", "aliases": ["-n"]})
    mode: str = field(default="a", metadata={"choices": ["a", "b"]})


@dataclass
class Flags:
    debug: bool = False
    use_cache: bool = True
    maybe: Optional[bool] = None


@dataclass
class Containers:
    ints: list[int] = field(default_factory=lambda: [1, 2])
    words: list[str] = field(default_factory=list)
    colors: list[Color] = field(default_factory=lambda: [Color.RED])
    opt_int: Optional[int] = None
    pep604: int | None = None
    stringy: "Optional[float]" = None  # a string annotation, resolved by get_type_hints
    kwargs: dict = field(default_factory=dict)


@dataclass
class Choices:
    kind: Literal["x", "y", 3] = "x"
    color: Color = Color.GREEN
    strategy: IntervalStrategy = IntervalStrategy.NO
    opt_strategy: Optional[IntervalStrategy] = None
    either: Union[str, IntervalStrategy] = "epoch"
    fsdp: Optional[Union[list[FSDPOption], str]] = ""


@dataclass
class Validated:
    size: int = 1
    derived: int = field(init=False, default=0)

    def __post_init__(self):
        if self.size < 0:
            raise ValueError("size must be >= 0")
        self.derived = self.size * 2


def test_basic_types_defaults_and_conversion():
    (b,) = HfArgumentParser(Basic).parse_args_into_dataclasses(
        ["--name", "n", "--count", "7", "--rate", "0.25", "--path", "a/b"]
    )
    assert b == Basic(name="n", count=7, rate=0.25, path=Path("a/b"))
    assert isinstance(b.path, Path)


def test_dash_alias_metadata_alias_and_metadata_choices():
    parser = HfArgumentParser(Basic)
    (b,) = parser.parse_args_into_dataclasses(
        ["--name", "n", "--learning-rate", "0.1", "-n", "hi", "--mode", "b"]
    )
    assert (b.learning_rate, b.note, b.mode) == (0.1, "hi", "b")
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--name", "n", "--mode", "c"])


def test_required_field_is_required(capsys):
    with pytest.raises(SystemExit):
        HfArgumentParser(Basic).parse_args_into_dataclasses([])
    assert "--name" in capsys.readouterr().err


def test_help_text_defaults_and_percent():
    text = HfArgumentParser(Basic).format_help()
    assert "A note; 10% of it." in text
    assert "(default: x)" in text
    assert "--learning_rate, --learning-rate LEARNING_RATE" in text  # placeholder written once
    assert "(default: None)" not in text  # the required --name has no default to show


def test_bool_flag_forms():
    parser = HfArgumentParser(Flags)
    assert parser.parse_args_into_dataclasses([])[0] == Flags(False, True, None)
    assert parser.parse_args_into_dataclasses(["--debug"])[0].debug is True
    for text, expected in [
        ("true", True),
        ("yes", True),
        ("1", True),
        ("False", False),
        ("no", False),
        ("0", False),
    ]:
        assert parser.parse_args_into_dataclasses(["--debug", text])[0].debug is expected
    assert parser.parse_args_into_dataclasses(["--no_use_cache"])[0].use_cache is False
    assert parser.parse_args_into_dataclasses(["--no-use-cache"])[0].use_cache is False
    assert parser.parse_args_into_dataclasses(["--use_cache", "false"])[0].use_cache is False
    assert parser.parse_args_into_dataclasses(["--maybe"])[0].maybe is True
    assert parser.parse_args_into_dataclasses(["--maybe", "n"])[0].maybe is False
    # a flag followed by another option does not swallow it
    flags = parser.parse_args_into_dataclasses(["--debug", "--maybe", "f"])[0]
    assert (flags.debug, flags.maybe) == (True, False)


def test_no_flag_only_for_true_defaults():
    options = {s for a in HfArgumentParser(Flags)._actions for s in a.option_strings}
    assert {"--no_use_cache", "--no-use-cache"} <= options
    assert "--no_debug" not in options and "--no_maybe" not in options


def test_bad_bool_value_exits(capsys):
    with pytest.raises(SystemExit):
        HfArgumentParser(Flags).parse_args_into_dataclasses(["--debug", "maybe"])
    assert "expected a boolean" in capsys.readouterr().err


def test_string_to_bool_rejects_garbage():
    assert string_to_bool("Y") is True
    with pytest.raises(argparse.ArgumentTypeError, match="true/false"):
        string_to_bool("perhaps")


def test_lists_optionals_string_annotations_and_dict():
    parser = HfArgumentParser(Containers)
    (c,) = parser.parse_args_into_dataclasses(
        [
            "--ints",
            "4",
            "5",
            "6",
            "--words",
            "a",
            "b",
            "--colors",
            "2",
            "RED",
            "--opt_int",
            "3",
            "--pep604",
            "9",
            "--stringy",
            "2.5",
            "--kwargs",
            '{"a": 1}',
        ]
    )
    assert c.ints == [4, 5, 6] and c.words == ["a", "b"]
    assert c.colors == [Color.GREEN, Color.RED]
    assert (c.opt_int, c.pep604, c.stringy, c.kwargs) == (3, 9, 2.5, {"a": 1})
    with pytest.raises(SystemExit):
        parser.parse_args_into_dataclasses(["--kwargs", "[1]"])


def test_default_factory_values_are_fresh_per_parse():
    parser = HfArgumentParser(Containers)
    first = parser.parse_args_into_dataclasses([])[0]
    assert first.ints == [1, 2] and first.colors == [Color.RED] and first.kwargs == {}
    first.ints.append(99)
    first.kwargs["x"] = 1
    second = parser.parse_args_into_dataclasses([])[0]
    assert second.ints == [1, 2] and second.kwargs == {}


def test_literal_enum_and_str_union_choices():
    parser = HfArgumentParser(Choices)
    (c,) = parser.parse_args_into_dataclasses([])
    assert c.color is Color.GREEN and c.strategy is IntervalStrategy.NO and c.opt_strategy is None
    (c,) = parser.parse_args_into_dataclasses(
        [
            "--kind",
            "3",
            "--color",
            "1",
            "--strategy",
            "steps",
            "--opt_strategy",
            "epoch",
            "--either",
            "steps",
            "--fsdp",
            "full_shard auto_wrap",
        ]
    )
    assert c.kind == 3 and c.color is Color.RED
    assert c.strategy is IntervalStrategy.STEPS and c.opt_strategy is IntervalStrategy.EPOCH
    assert c.either == "steps" and c.fsdp == "full_shard auto_wrap"
    for bad in (["--kind", "z"], ["--color", "3"], ["--strategy", "often"], ["--either", "often"]):
        with pytest.raises(SystemExit):
            parser.parse_args_into_dataclasses(bad)
    text = parser.format_help()
    assert "{no,steps,epoch}" in text and "{1,2}" in text


def test_unsupported_union_names_the_field():
    @dataclass
    class Bad:
        value: Union[int, float] = 1

    with pytest.raises(ValueError, match=r"Bad\.value"):
        HfArgumentParser(Bad)


def test_init_false_fields_skipped_and_post_init_runs():
    parser = HfArgumentParser(Validated)
    assert "--derived" not in parser.format_help()
    (v,) = parser.parse_args_into_dataclasses(["--size", "4"])
    assert v.derived == 8
    with pytest.raises(ValueError, match="size must be"):
        parser.parse_args_into_dataclasses(["--size", "-1"])


def test_non_dataclass_rejected():
    with pytest.raises(TypeError, match="dataclass_types"):
        HfArgumentParser([Flags, int])


def test_field_clash_between_dataclasses_is_reported():
    @dataclass
    class Other:
        debug: bool = True

    with pytest.raises(ValueError, match=r"Other\.debug"):
        HfArgumentParser([Flags, Other])


def test_multiple_dataclasses_and_hand_added_options():
    parser = HfArgumentParser([Flags, Validated])
    parser.add_argument("--extra", type=int, default=0)
    flags, validated, namespace = parser.parse_args_into_dataclasses(
        ["--debug", "--size", "2", "--extra", "5"]
    )
    assert flags.debug is True and validated.size == 2 and namespace.extra == 5


def test_unknown_arguments_raise_with_suggestion():
    parser = HfArgumentParser(Basic)
    with pytest.raises(ValueError, match=r"--lerning_rate: did you mean --learning_rate\?"):
        parser.parse_args_into_dataclasses(["--name", "n", "--lerning_rate", "0.1"])
    b, remaining = parser.parse_args_into_dataclasses(
        ["--name", "n", "--lerning_rate", "0.1"], return_remaining_strings=True
    )
    assert b.name == "n" and remaining == ["--lerning_rate", "0.1"]


def test_args_file_next_to_script(tmp_path, monkeypatch):
    script = tmp_path / "train.py"
    (tmp_path / "train.args").write_text("--name from_file --count 2  # a comment\n--rate 0.1\n")
    monkeypatch.setattr(sys, "argv", [str(script)])
    parser = HfArgumentParser(Basic)
    (b,) = parser.parse_args_into_dataclasses(["--count", "5"])
    assert (b.name, b.count, b.rate) == ("from_file", 5, 0.1)  # the command line wins
    with pytest.raises(SystemExit):  # --name now missing
        parser.parse_args_into_dataclasses([], look_for_args_file=False)


def test_args_file_with_script_name_plus_suffix(tmp_path, monkeypatch):
    script = tmp_path / "run.py"
    (tmp_path / "run.py.args").write_text("--name suffixed")
    monkeypatch.setattr(sys, "argv", [str(script)])
    assert HfArgumentParser(Basic).parse_args_into_dataclasses([])[0].name == "suffixed"


def test_explicit_args_filename_and_args_file_flag(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "absent.py")])
    base = tmp_path / "base.args"
    base.write_text("--name base --count 1")
    more = tmp_path / "more.args"
    more.write_text("--count 2 --rate 0.75")
    parser = HfArgumentParser(Basic)
    (b,) = parser.parse_args_into_dataclasses(
        ["--args_file", str(more)], args_filename=base, args_file_flag="--args_file"
    )
    assert (b.name, b.count, b.rate) == ("base", 2, 0.75)
    with pytest.raises(FileNotFoundError, match="args_filename"):
        parser.parse_args_into_dataclasses([], args_filename=tmp_path / "nope.args")


def test_parse_dict_extra_keys_and_enum_coercion():
    parser = HfArgumentParser([Choices, Validated])
    choices, validated = parser.parse_dict({"color": 1, "strategy": "epoch", "size": 3})
    assert (
        choices.color is Color.RED and choices.strategy is IntervalStrategy.EPOCH and validated.derived == 6
    )
    with pytest.raises(ValueError, match=r"sise: did you mean size\?"):
        parser.parse_dict({"sise": 3})
    _, validated = parser.parse_dict({"sise": 3, "size": 1}, allow_extra_keys=True)
    assert validated.size == 1
    with pytest.raises(TypeError, match="args must be a dict"):
        parser.parse_dict([("size", 1)])


def test_parse_json_and_yaml_files(tmp_path):
    parser = HfArgumentParser(Containers)
    json_path = tmp_path / "c.json"
    json_path.write_text(json.dumps({"ints": [7], "pep604": 1}))
    assert parser.parse_json_file(json_path)[0].ints == [7]
    json_path.write_text(json.dumps({"ints": [7], "unknown": 1}))
    with pytest.raises(ValueError, match="unknown"):
        parser.parse_json_file(json_path)
    assert parser.parse_json_file(json_path, allow_extra_keys=True)[0].ints == [7]
    json_path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="json_file"):
        parser.parse_json_file(json_path)

    pytest.importorskip("yaml")
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text("words: [a, b]\nopt_int: 4\n")
    (c,) = parser.parse_yaml_file(str(yaml_path))
    assert c.words == ["a", "b"] and c.opt_int == 4
    yaml_path.write_text("- 1\n")
    with pytest.raises(ValueError, match="yaml_file"):
        parser.parse_yaml_file(yaml_path)


def test_yaml_missing_gives_install_hint(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "yaml", None)
    path = tmp_path / "c.yaml"
    path.write_text("size: 1\n")
    with pytest.raises(ImportError, match="pip install pyyaml"):
        HfArgumentParser(Validated).parse_yaml_file(path)


def test_training_arguments_round_trip():
    args_module = pytest.importorskip("toolkit.args")
    parser = HfArgumentParser(args_module.TrainingArguments)
    (args,) = parser.parse_args_into_dataclasses(
        [
            "--output_dir",
            "x",
            "--learning_rate",
            "0.1",
            "--no_remove_unused_columns",
            "--evaluation_strategy",
            "steps",
            "--eval_steps",
            "5",
        ],
        look_for_args_file=False,
    )
    assert args.output_dir == "x"
    assert args.learning_rate == 0.1
    assert args.remove_unused_columns is False
    assert args.evaluation_strategy == "steps"
    assert args.eval_steps == 5


def test_abbreviation_not_ambiguous_with_own_dash_alias():
    @dataclass
    class Sched:
        lr_scheduler_type: str = "linear"

    (s,) = HfArgumentParser(Sched).parse_args_into_dataclasses(["--lr", "cosine"])
    assert s.lr_scheduler_type == "cosine"
