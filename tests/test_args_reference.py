"""docs/arguments_reference.md is generated from the field metadata and kept in step with it."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Union

from toolkit.args import ARGUMENT_ALIASES, PENDING_FEATURES, Seq2SeqTrainingArguments, TrainingArguments
from toolkit.args_reference import (
    DEFAULT_PATH,
    LAST_HF_FIELD,
    _type_name,
    field_docs,
    main,
    missing_help,
    render_reference,
)
from toolkit.types import IntervalStrategy

ROOT = Path(__file__).resolve().parents[1]


def test_every_field_has_help_text() -> None:
    for cls in (TrainingArguments, Seq2SeqTrainingArguments):
        assert missing_help(cls) == [], (
            f"{cls.__name__} fields without a 'help' entry in their metadata: {missing_help(cls)}; "
            "add one (it is shown by --help and in docs/arguments_reference.md)"
        )


def test_missing_help_finds_a_field_without_help() -> None:
    @dataclasses.dataclass
    class Extended(TrainingArguments):
        documented: int = dataclasses.field(default=1, metadata={"help": "Has help."})
        undocumented: int = 2
        blank: int = dataclasses.field(default=3, metadata={"help": "  "})

    assert missing_help(Extended) == ["undocumented", "blank"]


def test_committed_page_matches_the_generator() -> None:
    committed = (ROOT / DEFAULT_PATH).read_text(encoding="utf-8")
    assert committed == render_reference(), (
        f"{DEFAULT_PATH} is out of date with toolkit/args.py; regenerate it with "
        "`python -m toolkit.args_reference` and commit the result"
    )


def test_page_lists_every_field_once_with_its_help() -> None:
    text = render_reference()
    rows = [line for line in text.splitlines() if line.startswith("| `")]
    names = [row.split("`")[1] for row in rows]
    expected = [f.name for f in dataclasses.fields(TrainingArguments) if f.init]
    expected += [
        f.name for f in dataclasses.fields(Seq2SeqTrainingArguments) if f.init and f.name not in expected
    ]
    assert names == expected
    for f in dataclasses.fields(Seq2SeqTrainingArguments):
        row = rows[names.index(f.name)]
        assert " ".join(f.metadata["help"].split()) in row.replace("\\|", "|")


def test_field_docs_types_defaults_and_notes() -> None:
    docs = {d.name: d for d in field_docs(TrainingArguments)}
    assert docs["output_dir"].default == "required"
    assert docs["learning_rate"].default == repr(5e-5) and docs["learning_rate"].type == "float"
    assert docs["data_seed"].type == "Optional[int]"
    assert docs["save_strategy"].accepted == tuple(repr(m.value) for m in IntervalStrategy)
    assert docs["half_precision_backend"].accepted[0] == "'auto'"  # from the choices metadata
    for alias, target in ARGUMENT_ALIASES.items():
        assert any(alias in note for note in docs[target].notes)
    for name in PENDING_FEATURES:
        assert any("NotImplementedError" in note for note in docs[name].notes)
    names = list(docs)
    additions = {n for n, d in docs.items() if any("Toolkit addition" in note for note in d.notes)}
    assert additions == set(names[names.index(LAST_HF_FIELD) + 1 :])
    assert {"loss_normalization", "nan_inf_policy", "save_only_model"} <= additions
    own = [d.name for d in field_docs(Seq2SeqTrainingArguments, own_only=True)]
    assert "predict_with_generate" in own and "learning_rate" not in own


def test_type_names() -> None:
    assert _type_name(Optional[int]) == "Optional[int]"
    assert _type_name(Union[IntervalStrategy, str]) == "Union[IntervalStrategy, str]"
    assert _type_name(Union[list[str], str, None]) == "Optional[Union[list[str], str]]"
    assert _type_name(type(None)) == "None"


def test_main_writes_and_checks(tmp_path: Path, capsys) -> None:
    page = tmp_path / "docs" / "arguments_reference.md"
    assert main([str(page), "--check"]) == 1  # missing
    assert "python -m toolkit.args_reference" in capsys.readouterr().err
    assert main([str(page)]) == 0
    assert page.read_text(encoding="utf-8") == render_reference()
    assert main([str(page), "--check"]) == 0
    page.write_text(page.read_text(encoding="utf-8").replace("Peak learning rate", "Learning rate"))
    assert main([str(page), "--check"]) == 1  # stale
