"""Plumbing every recipe shares: the parser, config files, logging setup, metric files.

Each recipe stays a script to read top to bottom (its data, its model, its `Trainer`);
only the parts that would otherwise be the same lines in every recipe live here.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from toolkit import HfArgumentParser

#: The extensions a single command-line argument may end with to be read as a config file.
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")


def build_recipe_parser(
    dataclass_types: Iterable[type], defaults: Mapping[str, Any], doc: str | None
) -> HfArgumentParser:
    """An `HfArgumentParser` over ``dataclass_types`` with the recipe's ``defaults`` set.

    Args:
        dataclass_types: The recipe's argument dataclasses, e.g. ``(ModelDataArguments, TrainingArguments)``.
        defaults: Field values that replace the dataclass defaults (``--help`` shows them).
        doc: The recipe's module docstring; its first paragraph becomes the description.
    """
    parser = HfArgumentParser(tuple(dataclass_types), description=(doc or "").split("\n\n")[0])
    parser.set_defaults(**defaults)
    return parser


def read_config_file(path: str | Path) -> dict[str, Any]:
    """Read a ``.json`` or ``.yaml`` / ``.yml`` config file holding a mapping of option names to values.

    Raises:
        ImportError: For a YAML file when PyYAML is not installed.
        ValueError: If the file does not hold a mapping.
    """
    path = Path(path)
    if path.suffix == ".json":
        config = json.loads(path.read_text(encoding="utf-8"))
    else:
        try:
            import yaml
        except ImportError as err:
            raise ImportError("YAML config files need PyYAML: pip install pyyaml") from err
        config = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(config, dict):
        raise ValueError(f"config file {str(path)!r} must hold a mapping of option names to values")
    return config


def parse_recipe_args(
    parser: HfArgumentParser, defaults: Mapping[str, Any], argv: Sequence[str] | None = None
) -> tuple[Any, ...]:
    """Parse the command line, or a single ``.json`` / ``.yaml`` config file path.

    A config file is a mapping of option names to values; options it leaves out take
    the same defaults as on the command line (the recipe ``defaults`` included).

    Args:
        parser: The recipe's parser (see `build_recipe_parser`).
        defaults: The recipe defaults, applied under the config file's values.
        argv: Command-line strings; ``sys.argv[1:]`` when None.

    Returns:
        One instance per dataclass of ``parser``, in its order.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    if len(argv) == 1 and argv[0].endswith(CONFIG_SUFFIXES):
        return parser.parse_dict({**defaults, **read_config_file(argv[0])})
    return parser.parse_args_into_dataclasses(argv)


def setup_logging(logger: logging.Logger, args: Any) -> None:
    """Log like the HF example scripts: INFO for the recipe on the main process, toolkit per ``args``.

    Args:
        logger: The recipe's logger.
        args: The parsed `TrainingArguments` (``should_log``, ``get_process_log_level()``).
    """
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.WARNING)
    logger.setLevel(logging.INFO if args.should_log else logging.WARNING)
    logging.getLogger("toolkit").setLevel(args.get_process_log_level())


def log_and_save_metrics(trainer: Any, split: str, metrics: dict[str, float]) -> None:
    """Print ``metrics`` (main process) and write ``<split>_results.json`` with the trainer."""
    trainer.log_metrics(split, metrics)
    trainer.save_metrics(split, metrics)


def train_and_save(trainer: Any, resume_from_checkpoint: str | bool | None = None) -> Any:
    """``trainer.train()``, then save the model and the train metrics; return the `TrainOutput`."""
    train_result = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    trainer.save_model()
    log_and_save_metrics(trainer, "train", train_result.metrics)
    return train_result
