"""The argument reference page, generated from the field metadata of the arguments dataclasses.

``docs/arguments_reference.md`` lists every field of `TrainingArguments` and
`Seq2SeqTrainingArguments`: its name, type, default and help text, the values it
accepts, and whether it is an alias target, deprecated, not supported yet, or a toolkit
addition. The page is never edited by hand; regenerate it after changing a field::

    python -m toolkit.args_reference            # writes docs/arguments_reference.md
    python -m toolkit.args_reference --check    # exit status 1 when the page is stale

The help text is the ``help`` entry of each field's metadata, the same text
`toolkit.argparser.HfArgumentParser` shows for ``--help``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from toolkit.args import ARGUMENT_ALIASES, PENDING_FEATURES, Seq2SeqTrainingArguments, TrainingArguments

__all__ = [
    "FieldDoc",
    "field_docs",
    "missing_help",
    "render_reference",
    "main",
    "DEFAULT_PATH",
    "LAST_HF_FIELD",
]

#: Where the page lives, relative to the repository root.
DEFAULT_PATH = Path("docs") / "arguments_reference.md"

#: The last field of HF `TrainingArguments` v4.34.0; fields declared after it are toolkit additions.
LAST_HF_FIELD = "include_tokens_per_second"

_REGENERATE = "python -m toolkit.args_reference"


@dataclass(frozen=True)
class FieldDoc:
    """What the reference says about one field.

    Attributes:
        name: the field name (the keyword and the ``--flag``).
        type: the annotation, written the way it reads in the source.
        default: the default value as Python source, or ``"required"``.
        help: the ``help`` metadata (empty when missing).
        accepted: the accepted values (from ``choices`` metadata or an enum annotation).
        notes: aliases, pending features and toolkit additions.
    """

    name: str
    type: str
    default: str
    help: str
    accepted: tuple[str, ...]
    notes: tuple[str, ...]


def _type_name(tp: Any) -> str:
    """An annotation as readable text, the same on every supported Python version."""
    if tp is type(None):
        return "None"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union:
        inner = [_type_name(a) for a in args if a is not type(None)]
        body = inner[0] if len(inner) == 1 else f"Union[{', '.join(inner)}]"
        return f"Optional[{body}]" if type(None) in args else body
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_name(a) for a in args)}]" if args else name
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _enums_in(tp: Any) -> list[type[Enum]]:
    """Enum classes named anywhere in an annotation (``Union[IntervalStrategy, str]``...)."""
    if isinstance(tp, type) and issubclass(tp, Enum):
        return [tp]
    return [e for arg in typing.get_args(tp) for e in _enums_in(arg)]


def _default_text(field: dataclasses.Field) -> str:
    if field.default is not dataclasses.MISSING:
        value = field.default
        return repr(value.value if isinstance(value, Enum) else value)
    if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return repr(field.default_factory())  # type: ignore[misc]
    return "required"


def field_docs(cls: type = TrainingArguments, own_only: bool = False) -> list[FieldDoc]:
    """Describe every init field of an arguments dataclass, in declaration order.

    Args:
        cls: `TrainingArguments`, `Seq2SeqTrainingArguments` or another subclass.
        own_only: only the fields ``cls`` adds to its `TrainingArguments` base.

    Returns:
        One `FieldDoc` per field.

    Example:
        >>> doc = {d.name: d for d in field_docs()}["evaluation_strategy"]
        >>> doc.default, doc.accepted, doc.notes[0]
        ("'no'", ("'no'", "'steps'", "'epoch'"), 'Also accepted as `eval_strategy`.')
    """
    hints = typing.get_type_hints(cls)
    base = {f.name for f in dataclasses.fields(TrainingArguments)} if own_only else set()
    names = [f.name for f in dataclasses.fields(TrainingArguments)]
    additions = set(names[names.index(LAST_HF_FIELD) + 1 :]) if LAST_HF_FIELD in names else set()
    aliases: dict[str, list[str]] = {}
    for alias, target in ARGUMENT_ALIASES.items():
        aliases.setdefault(target, []).append(alias)
    docs = []
    for f in dataclasses.fields(cls):
        if not f.init or f.name in base:
            continue
        tp = hints.get(f.name, f.type)
        choices = f.metadata.get("choices")
        if choices:
            accepted = tuple(repr(c) for c in choices)
        else:
            accepted = tuple(repr(m.value) for e in _enums_in(tp) for m in e)
        notes = []
        if f.name in aliases:
            notes.append("Also accepted as " + ", ".join(f"`{a}`" for a in aliases[f.name]) + ".")
        if f.name in PENDING_FEATURES:
            notes.append(
                f"Not supported yet ({PENDING_FEATURES[f.name]}): a non-default value raises `NotImplementedError`."
            )
        if f.name in additions:
            notes.append("Toolkit addition (not in HF 4.34).")
        docs.append(
            FieldDoc(
                name=f.name,
                type=_type_name(tp),
                default=_default_text(f),
                help=str(f.metadata.get("help", "")).strip(),
                accepted=accepted,
                notes=tuple(notes),
            )
        )
    return docs


def missing_help(cls: type = TrainingArguments) -> list[str]:
    """Names of the fields of ``cls`` whose metadata has no (or an empty) ``help`` text.

    Example:
        >>> missing_help(Seq2SeqTrainingArguments)
        []
    """
    return [d.name for d in field_docs(cls) if not d.help]


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    return " ".join(text.split()).replace("|", "\\|")


def _table(docs: Sequence[FieldDoc]) -> list[str]:
    lines = ["| Field | Type | Default | Description |", "|---|---|---|---|"]
    for d in docs:
        parts = [_cell(d.help) or "*(no help text)*"]
        if d.accepted:
            parts.append("Accepted: " + ", ".join(f"`{_cell(a)}`" for a in d.accepted) + ".")
        parts.extend(_cell(n) for n in d.notes)
        default = "*required*" if d.default == "required" else f"`{_cell(d.default)}`"
        lines.append(f"| `{d.name}` | `{_cell(d.type)}` | {default} | {' '.join(parts)} |")
    return lines


def render_reference() -> str:
    """The full text of ``docs/arguments_reference.md``.

    Returns:
        Markdown: an introduction, then one table for `TrainingArguments` and one for the
        fields `Seq2SeqTrainingArguments` adds.
    """
    base = field_docs(TrainingArguments)
    seq2seq = field_docs(Seq2SeqTrainingArguments, own_only=True)
    lines = [
        "# Argument reference",
        "",
        "<!-- Generated by `python -m toolkit.args_reference` from the field metadata in",
        "     toolkit/args.py. Do not edit by hand: change the field's help text, then regenerate. -->",
        "",
        f"Every field of `TrainingArguments` ({len(base)} fields) and of `Seq2SeqTrainingArguments`,",
        "generated from the dataclass metadata, the same text `HfArgumentParser` prints for",
        "`--help`. What is checked when the object is created, and which defaults are filled in,",
        "is described in [Training arguments](arguments.md); the differences from HF 4.34 are in",
        "[Migrating from the HF Trainer](migration.md).",
        "",
        "A default shown as `None` is often filled in when the object is created (for example",
        "`logging_dir` and `run_name`); the description says with what.",
        "",
        "```python",
        "import dataclasses",
        "from toolkit import TrainingArguments",
        "",
        "help_text = {f.name: f.metadata['help'] for f in dataclasses.fields(TrainingArguments)}",
        "print(help_text['learning_rate'])",
        "```",
        "",
        "## TrainingArguments",
        "",
        *_table(base),
        "",
        "## Seq2SeqTrainingArguments",
        "",
        "Every field above, plus:",
        "",
        *_table(seq2seq),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or, with ``--check``, verify) the reference page.

    Args:
        argv: command-line arguments (``[PATH] [--check]``); defaults to ``sys.argv[1:]``.

    Returns:
        0 on success; 1 when ``--check`` finds the page missing or stale, or a field
        lacks help text.
    """
    parser = argparse.ArgumentParser(prog=_REGENERATE, description="Generate docs/arguments_reference.md.")
    parser.add_argument("path", nargs="?", default=str(DEFAULT_PATH), help="output file")
    parser.add_argument("--check", action="store_true", help="only check that the file is up to date")
    opts = parser.parse_args(argv)
    lacking = missing_help(Seq2SeqTrainingArguments)
    if lacking:
        print(f"fields without help text in their metadata: {', '.join(lacking)}", file=sys.stderr)
        return 1
    text = render_reference()
    path = Path(opts.path)
    if opts.check:
        current = path.read_text(encoding="utf-8") if path.is_file() else None
        if current != text:
            print(f"{path} is out of date; regenerate it with `{_REGENERATE}`", file=sys.stderr)
            return 1
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
