"""Command-line parsing driven by dataclasses (the ``HfArgumentParser`` equivalent).

Each field of each dataclass becomes one ``--field_name`` option (``--field-name`` is
accepted too). The parser returns one instance per dataclass, built by calling the
dataclass itself, so every ``__post_init__`` check still runs.

Supported field types:

* ``str``, ``int``, ``float``, ``pathlib.Path`` (and any other one-argument callable type);
* ``bool``: ``--flag`` (True), ``--flag false`` (any of true/false/yes/no/t/f/y/n/1/0), and
  ``--no_flag`` / ``--no-flag`` when the default is True;
* ``Optional[X]`` / ``X | None`` (unwrapped to ``X``);
* ``List[X]`` / ``list[X]`` (one or more values);
* ``Literal[...]`` and ``Enum`` subclasses (restricted choices; enum fields come back as
  enum members);
* unions with ``str`` such as ``Union[str, SomeEnum]`` (parsed as ``str``, restricted to the
  enum's values when every other member is an ``Enum``);
* ``dict`` (given on the command line as a JSON object).

Field ``metadata`` may carry ``help``, ``choices``, ``aliases`` (extra option strings),
``metavar``, ``nargs`` and ``type``; other metadata keys are ignored.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import enum
import json
import os
import re
import shlex
import sys
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal, Union

__all__ = ["HfArgumentParser", "DefaultsHelpFormatter", "string_to_bool"]

_TRUE_STRINGS = ("true", "yes", "t", "y", "1")
_FALSE_STRINGS = ("false", "no", "f", "n", "0")
_METADATA_KEYS = ("help", "choices", "metavar", "nargs", "type")


def string_to_bool(value: str | bool) -> bool:
    """Read a boolean written on the command line.

    Args:
        value: A bool, or one of true/false/yes/no/t/f/y/n/1/0 (any case).

    Returns:
        The boolean it spells.

    Raises:
        argparse.ArgumentTypeError: If the string spells no boolean.
    """
    if isinstance(value, bool):
        return value
    lowered = str(value).strip().lower()
    if lowered in _TRUE_STRINGS:
        return True
    if lowered in _FALSE_STRINGS:
        return False
    accepted = "/".join(t for pair in zip(_TRUE_STRINGS, _FALSE_STRINGS) for t in pair)
    raise argparse.ArgumentTypeError(f"expected a boolean ({accepted}), got {value!r}")


def _json_dict(value: str) -> dict:
    """Parse a JSON object given as one command-line string."""
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {value!r} ({err})") from None
    if not isinstance(parsed, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {value!r}")
    return parsed


def _choice_converter(choices: list[Any]) -> Callable[[str], Any]:
    """Map a command-line string onto the choice whose ``str`` form it equals.

    Enum members are also matched by name. A string that matches nothing is returned
    as is, so that argparse reports it as an invalid choice with the accepted list.
    """
    by_text = {str(choice): choice for choice in choices}

    def convert(text: str) -> Any:
        if text in by_text:
            return by_text[text]
        return text

    convert.__name__ = "choice"
    return convert


def _enum_converter(enum_type: type[enum.Enum]) -> Callable[[str], Any]:
    """Map a command-line string onto an enum value (by value text, then by member name)."""
    by_text = {str(member.value): member.value for member in enum_type}
    by_name = {member.name: member.value for member in enum_type}

    def convert(text: str) -> Any:
        if text in by_text:
            return by_text[text]
        if text in by_name:
            return by_name[text]
        return text

    convert.__name__ = enum_type.__name__
    return convert


def _is_union(tp: Any) -> bool:
    origin = typing.get_origin(tp)
    return origin is Union or origin is types.UnionType


def _is_enum_type(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def _escape_percent(text: str) -> str:
    """Protect lone ``%`` signs from argparse's ``%``-formatting of help strings."""
    return re.sub(r"(?<!%)%(?![(%])", "%%", text)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Help formatter that shows defaults and writes an option's value placeholder once.

    ``--learning_rate, --learning-rate LEARNING_RATE`` instead of repeating the
    placeholder (or the whole list of choices) after every alias.
    """

    def _format_action_invocation(self, action: argparse.Action) -> str:
        if not action.option_strings or action.nargs == 0:
            return super()._format_action_invocation(action)
        placeholder = self._format_args(action, self._get_default_metavar_for_optional(action))
        return f"{', '.join(action.option_strings)} {placeholder}"


@dataclasses.dataclass
class _FieldPlan:
    """How one dataclass field maps onto argparse, and how its parsed value is finished."""

    kwargs: dict[str, Any]
    finish: Callable[[Any], Any] | None = None
    default_factory: Callable[[], Any] | None = None


class HfArgumentParser(argparse.ArgumentParser):
    """An ``argparse.ArgumentParser`` whose options come from dataclass fields.

    It owns the mapping from fields to options and back: it adds one option per
    ``init`` field of each dataclass and builds the instances after parsing. Options
    added by hand with ``add_argument`` come back in an extra ``argparse.Namespace``.

    Args:
        dataclass_types: One dataclass type, or a list of them.
        **kwargs: Forwarded to ``argparse.ArgumentParser`` (the default
            ``formatter_class`` is `DefaultsHelpFormatter`, an
            ``argparse.ArgumentDefaultsHelpFormatter``).

    Raises:
        TypeError: If ``dataclass_types`` holds something that is not a dataclass type.
        ValueError: If a field's type cannot be expressed as an option, or two fields
            claim the same option string.

    Example:
        >>> from dataclasses import dataclass
        >>> @dataclass
        ... class Opts:
        ...     lr: float = 0.1
        >>> (opts,) = HfArgumentParser(Opts).parse_args_into_dataclasses(["--lr", "0.5"])
        >>> opts.lr
        0.5
    """

    def __init__(self, dataclass_types: type | Iterable[type], **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", DefaultsHelpFormatter)
        super().__init__(**kwargs)
        single = dataclasses.is_dataclass(dataclass_types) or isinstance(dataclass_types, (str, bytes))
        if single or not isinstance(dataclass_types, Iterable):
            dataclass_types = [dataclass_types]
        self.dataclass_types: list[type] = list(dataclass_types)
        self._finishers: dict[str, Callable[[Any], Any]] = {}
        self._factories: dict[str, tuple[Any, Callable[[], Any]]] = {}
        for dtype in self.dataclass_types:
            if not (isinstance(dtype, type) and dataclasses.is_dataclass(dtype)):
                raise TypeError(
                    f"dataclass_types must be a dataclass type or a list of dataclass types; got {dtype!r}"
                )
            self._add_dataclass_arguments(dtype)

    # ------------------------------------------------------------------ building

    def _add_dataclass_arguments(self, dtype: type) -> None:
        """Add one option (two for bools defaulting to True) per init field of ``dtype``."""
        try:
            hints = typing.get_type_hints(dtype)
        except NameError as err:
            raise ValueError(
                f"could not resolve the type annotations of {dtype.__name__} ({err}); define the "
                "types it uses at module level so typing.get_type_hints can find them"
            ) from None
        group_name = getattr(dtype, "_argument_group_name", None)
        target: Any = self.add_argument_group(group_name) if group_name else self
        for field in dataclasses.fields(dtype):
            if not field.init:
                continue
            self._add_field(target, dtype, field, hints.get(field.name, field.type))

    def _add_field(self, target: Any, dtype: type, field: dataclasses.Field, hint: Any) -> None:
        """Add the option(s) for one field."""
        plan = self._plan_field(dtype, field, hint)
        names = [f"--{field.name}"]
        if "_" in field.name:
            names.append(f"--{field.name.replace('_', '-')}")
        aliases = field.metadata.get("aliases", [])
        if isinstance(aliases, str):
            aliases = [aliases]
        names.extend(a for a in aliases if a not in names)
        try:
            target.add_argument(*names, dest=field.name, **plan.kwargs)
            if plan.kwargs.get("type") is string_to_bool and plan.kwargs.get("default") is True:
                no_names = [f"--no_{field.name}", f"--no-{field.name.replace('_', '-')}"]
                target.add_argument(
                    *dict.fromkeys(no_names),
                    dest=field.name,
                    action="store_false",
                    default=argparse.SUPPRESS,
                    help=f"Set {field.name} to False.",
                )
        except argparse.ArgumentError as err:
            raise ValueError(f"field {dtype.__name__}.{field.name}: {err}") from None
        if plan.finish is not None:
            self._finishers[field.name] = plan.finish
        if plan.default_factory is not None:
            self._factories[field.name] = (plan.kwargs["default"], plan.default_factory)

    def _plan_field(self, dtype: type, field: dataclasses.Field, hint: Any) -> _FieldPlan:
        """Work out the add_argument keywords for one field from its type and metadata."""
        where = f"{dtype.__name__}.{field.name}"
        kwargs: dict[str, Any] = {}
        finish: Callable[[Any], Any] | None = None
        union_choices: list[Any] | None = None

        if _is_union(hint):
            members = [m for m in typing.get_args(hint) if m is not type(None)]
            if len(members) == 1:
                hint = members[0]
            elif str in members:
                others = [m for m in members if m is not str]
                if all(_is_enum_type(m) for m in others):
                    union_choices = [member.value for m in others for member in m]
                hint = str
            else:
                raise ValueError(
                    f"field {where} has type {hint!r}; unions are supported only as Optional[X] "
                    "or with str as one member (e.g. Union[str, SomeEnum])"
                )

        origin = typing.get_origin(hint)
        if hint is Any or hint is object:
            hint = str
        if origin is Literal:
            choices = list(typing.get_args(hint))
            kwargs["choices"] = choices
            kwargs["type"] = _choice_converter(choices)
        elif _is_enum_type(hint):
            kwargs["choices"] = [member.value for member in hint]
            kwargs["type"] = _enum_converter(hint)
            finish = _make_enum_finisher(hint)
        elif hint is bool:
            kwargs["type"] = string_to_bool
            kwargs["nargs"] = "?"
            kwargs["const"] = True
            kwargs["metavar"] = "BOOL"
        elif origin is list:
            args = typing.get_args(hint)
            item = args[0] if args else str
            if _is_union(item):
                item_members = [m for m in typing.get_args(item) if m is not type(None)]
                item = str if str in item_members or len(item_members) != 1 else item_members[0]
            kwargs["nargs"] = "+"
            if typing.get_origin(item) is Literal:
                choices = list(typing.get_args(item))
                kwargs["choices"] = choices
                kwargs["type"] = _choice_converter(choices)
            elif _is_enum_type(item):
                kwargs["choices"] = [member.value for member in item]
                kwargs["type"] = _enum_converter(item)
                item_finish = _make_enum_finisher(item)
                finish = lambda values: None if values is None else [item_finish(v) for v in values]  # noqa: E731
            elif item is bool:
                kwargs["type"] = string_to_bool
            elif item is Any or item is object:
                kwargs["type"] = str
            elif callable(item) and typing.get_origin(item) is None:
                kwargs["type"] = item
            else:
                raise ValueError(f"field {where} has list item type {item!r}, which cannot be parsed")
        elif hint is dict or origin is dict:
            kwargs["type"] = _json_dict
            kwargs["metavar"] = "JSON"
        elif origin is not None or not callable(hint):
            raise ValueError(
                f"field {where} has type {hint!r}, which cannot be parsed from the command line; "
                "supported: str, int, float, bool, Path, Enum, Literal, list, dict, Optional and str-unions"
            )
        else:
            kwargs["type"] = hint
        if union_choices is not None:
            kwargs["choices"] = union_choices

        default_factory = None
        if field.default is not dataclasses.MISSING:
            default = field.default
            kwargs["default"] = default.value if isinstance(default, enum.Enum) else default
        elif field.default_factory is not dataclasses.MISSING:
            default_factory = field.default_factory
            kwargs["default"] = default_factory()
        else:
            kwargs["required"] = True
            kwargs["default"] = argparse.SUPPRESS  # keeps "(default: None)" out of the help

        for key in _METADATA_KEYS:
            if key in field.metadata:
                kwargs[key] = field.metadata[key]
        if isinstance(kwargs.get("help"), str):
            kwargs["help"] = _escape_percent(kwargs["help"])
        if "choices" in field.metadata and "type" not in field.metadata and kwargs.get("type") is str:
            kwargs["type"] = _choice_converter(list(field.metadata["choices"]))
        return _FieldPlan(kwargs=kwargs, finish=finish, default_factory=default_factory)

    # ------------------------------------------------------------------ parsing

    def _get_option_tuples(self, option_string: str) -> list[tuple]:
        """Abbreviation candidates, counting an option and its dash alias only once.

        Without this, ``--lr`` would be reported as ambiguous between
        ``--lr_scheduler_type`` and ``--lr-scheduler-type``, which are the same option.
        """
        seen: set[int] = set()
        unique = []
        for candidate in super()._get_option_tuples(option_string):
            if id(candidate[0]) not in seen:
                seen.add(id(candidate[0]))
                unique.append(candidate)
        return unique

    def _build(self, values: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Instantiate every dataclass from ``values``; return the instances and leftovers."""
        leftovers = dict(values)
        outputs = []
        for dtype in self.dataclass_types:
            keys = [f.name for f in dataclasses.fields(dtype) if f.init]
            inputs = {k: leftovers.pop(k) for k in keys if k in leftovers}
            outputs.append(dtype(**inputs))
        return outputs, leftovers

    def _finish(self, values: dict[str, Any]) -> dict[str, Any]:
        """Convert enum values back to members and give list defaults fresh copies."""
        for name, (default, factory) in self._factories.items():
            if name in values and values[name] is default:
                values[name] = factory()
        for name, finish in self._finishers.items():
            if name in values:
                values[name] = finish(values[name])
        return values

    def _read_args_file(self, path: Path) -> list[str]:
        """Split an ``.args`` file into command-line strings (shell quoting, # comments)."""
        return shlex.split(path.read_text(encoding="utf-8"), comments=True)

    def _collect_file_args(
        self,
        args: list[str],
        look_for_args_file: bool,
        args_filename: str | os.PathLike | None,
        args_file_flag: str | None,
    ) -> tuple[list[str], list[str]]:
        """Return (strings read from args files, command-line strings without the file flag)."""
        files: list[Path] = []
        if args_filename is not None:
            path = Path(args_filename)
            if not path.is_file():
                raise FileNotFoundError(f"args_filename {str(path)!r} does not exist")
            files.append(path)
        elif look_for_args_file and sys.argv and sys.argv[0]:
            script = Path(sys.argv[0])
            for candidate in dict.fromkeys([script.with_suffix(".args"), Path(f"{sys.argv[0]}.args")]):
                if candidate.is_file():
                    files.append(candidate)
                    break
        if args_file_flag:
            flag_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
            flag_parser.add_argument(args_file_flag, type=str, action="append", dest="_args_files")
            found, args = flag_parser.parse_known_args(args)
            for name in found._args_files or []:
                path = Path(name)
                if not path.is_file():
                    raise FileNotFoundError(f"{args_file_flag} file {name!r} does not exist")
                files.append(path)
        file_args: list[str] = []
        for path in files:
            file_args.extend(self._read_args_file(path))
        return file_args, args

    def _unknown_args_error(self, remaining: list[str]) -> ValueError:
        """Build the error for unused command-line strings, with close-match suggestions."""
        known = [s for action in self._actions for s in action.option_strings]
        lines = [f"unknown arguments (not used by any dataclass field): {remaining}"]
        for item in remaining:
            if not item.startswith("-"):
                continue
            option = item.split("=", 1)[0]
            close = difflib.get_close_matches(option, known, n=1, cutoff=0.6)
            if close:
                lines.append(f"  {option}: did you mean {close[0]}?")
        return ValueError("\n".join(lines))

    def parse_args_into_dataclasses(
        self,
        args: list[str] | None = None,
        return_remaining_strings: bool = False,
        look_for_args_file: bool = True,
        args_filename: str | os.PathLike | None = None,
        args_file_flag: str | None = None,
    ) -> tuple[Any, ...]:
        """Parse command-line strings into one instance per dataclass.

        Args:
            args: The strings to parse; ``sys.argv[1:]`` when None.
            return_remaining_strings: Append the list of unused strings to the result
                instead of raising on them.
            look_for_args_file: Prepend the arguments of the file named like the running
                script with an ``.args`` suffix (``train.py`` -> ``train.args``, or
                ``train.py.args``) when it exists.
            args_filename: An explicit ``.args`` file to prepend instead of the default one.
            args_file_flag: An option (e.g. ``"--args_file"``) through which more args files
                may be named on the command line; later files override earlier ones.

        Returns:
            The dataclass instances in the order of ``dataclass_types``; then an
            ``argparse.Namespace`` of hand-added options if there are any; then the
            remaining strings if ``return_remaining_strings``.

        Raises:
            ValueError: If strings are left over and ``return_remaining_strings`` is False.
            FileNotFoundError: If an explicitly named args file does not exist.
            SystemExit: On argparse errors (bad value, missing required option), as argparse does.
        """
        args = list(sys.argv[1:] if args is None else args)
        file_args, args = self._collect_file_args(args, look_for_args_file, args_filename, args_file_flag)
        namespace, remaining = self.parse_known_args(file_args + args)
        outputs, leftovers = self._build(self._finish(vars(namespace)))
        if leftovers:
            outputs.append(argparse.Namespace(**leftovers))
        if return_remaining_strings:
            return (*outputs, remaining)
        if remaining:
            raise self._unknown_args_error(remaining)
        return tuple(outputs)

    def _coerce_mapping(self, args: dict[str, Any]) -> dict[str, Any]:
        """Apply the enum conversion used on the command line to values from a mapping."""
        values = dict(args)
        for name, finish in self._finishers.items():
            if name in values:
                try:
                    values[name] = finish(values[name])
                except ValueError:
                    pass  # leave it for the dataclass's own validation to report
        return values

    def parse_dict(self, args: dict[str, Any], allow_extra_keys: bool = False) -> tuple[Any, ...]:
        """Build the dataclasses from a mapping of field names to values (no argparse involved).

        Args:
            args: Field names to values. Values are passed to the dataclasses as they are,
                except that enum-typed fields get enum members.
            allow_extra_keys: Ignore keys that name no field instead of raising.

        Returns:
            One instance per dataclass, in the order of ``dataclass_types``.

        Raises:
            TypeError: If ``args`` is not a dict.
            ValueError: If there are unknown keys and ``allow_extra_keys`` is False.
        """
        if not isinstance(args, dict):
            raise TypeError(f"args must be a dict of field names to values; got {type(args).__name__}")
        outputs, leftovers = self._build(self._coerce_mapping(args))
        if leftovers and not allow_extra_keys:
            known = sorted({f.name for d in self.dataclass_types for f in dataclasses.fields(d) if f.init})
            lines = [f"keys not used by any dataclass field: {sorted(leftovers)}"]
            for key in sorted(leftovers):
                close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                if close:
                    lines.append(f"  {key}: did you mean {close[0]}?")
            lines.append("(pass allow_extra_keys=True to ignore them)")
            raise ValueError("\n".join(lines))
        return tuple(outputs)

    def parse_json_file(
        self, json_file: str | os.PathLike, allow_extra_keys: bool = False
    ) -> tuple[Any, ...]:
        """Build the dataclasses from a JSON file holding one object.

        Args:
            json_file: Path of the JSON file.
            allow_extra_keys: Ignore keys that name no field instead of raising.

        Returns:
            One instance per dataclass, in the order of ``dataclass_types``.

        Raises:
            ValueError: If the file does not hold a JSON object, or has unknown keys.
        """
        with open(json_file, encoding="utf-8") as handle:
            data = json.load(handle)
        if not isinstance(data, dict):
            raise ValueError(
                f"json_file {str(json_file)!r} must hold a JSON object, got {type(data).__name__}"
            )
        return self.parse_dict(data, allow_extra_keys=allow_extra_keys)

    def parse_yaml_file(
        self, yaml_file: str | os.PathLike, allow_extra_keys: bool = False
    ) -> tuple[Any, ...]:
        """Build the dataclasses from a YAML file holding one mapping (needs PyYAML).

        Args:
            yaml_file: Path of the YAML file.
            allow_extra_keys: Ignore keys that name no field instead of raising.

        Returns:
            One instance per dataclass, in the order of ``dataclass_types``.

        Raises:
            ImportError: If PyYAML is not installed.
            ValueError: If the file does not hold a mapping, or has unknown keys.
        """
        try:
            import yaml
        except ImportError as err:
            raise ImportError(
                "parse_yaml_file needs PyYAML: pip install pyyaml (or pip install 'toolkit[yaml]')"
            ) from err
        data = yaml.safe_load(Path(yaml_file).read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError(f"yaml_file {str(yaml_file)!r} must hold a mapping, got {type(data).__name__}")
        return self.parse_dict(data, allow_extra_keys=allow_extra_keys)


def _make_enum_finisher(enum_type: type[enum.Enum]) -> Callable[[Any], Any]:
    """Return a function turning an enum value (or member) into the member; None stays None."""

    def finish(value: Any) -> Any:
        if value is None or isinstance(value, enum_type):
            return value
        return enum_type(value)

    return finish
