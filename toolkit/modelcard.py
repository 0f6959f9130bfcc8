"""Model cards: a ``README.md`` describing a trained model, with a YAML metadata header.

`build_model_card` is a pure function of the training arguments (as a dict), the log
history and a few descriptive fields: it returns the card's text. `write_model_card`
writes it through fsspec (a local folder or any URL), and `create_trainer_model_card`
gathers what a Trainer knows and does both (`Trainer.create_model_card` calls it).

The card holds:

* a YAML header: ``language``, ``license``, ``base_model`` (``finetuned_from``),
  ``tags``, ``datasets``, ``metrics`` and a ``model-index`` whose ``results`` give the
  final evaluation metrics for each task;
* the final evaluation results, the training hyperparameters, a table of the training
  loss and the evaluation metrics at each evaluation, and the framework versions.

Example:
    >>> import yaml
    >>> history = [
    ...     {"loss": 0.9, "learning_rate": 0.01, "epoch": 1.0, "step": 4},
    ...     {"eval_loss": 0.7, "eval_runtime": 0.1, "epoch": 1.0, "step": 4},
    ... ]
    >>> card = build_model_card({"learning_rate": 0.01, "seed": 3}, history, model_name="tiny")
    >>> meta = yaml.safe_load(card.split("---")[1])
    >>> meta["model-index"][0]["name"], meta["tags"]
    ('tiny', ['generated_from_trainer'])
    >>> "| 0.9 | 1.0 | 4 | 0.7 |" in card
    True
"""

from __future__ import annotations

import importlib.metadata
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from toolkit.checkpoint import files as storage

__all__ = [
    "build_model_card",
    "write_model_card",
    "create_trainer_model_card",
    "training_hyperparameters",
    "evaluation_table",
    "to_yaml",
    "MODEL_CARD_NAME",
]

MODEL_CARD_NAME = "README.md"

_SKIPPED_EVAL_SUFFIXES = ("_runtime", "_per_second", "_compilation_time")
_TASK_NAMES = {
    "text-classification": "Text Classification",
    "token-classification": "Token Classification",
    "question-answering": "Question Answering",
    "fill-mask": "Masked Language Modeling",
    "text-generation": "Causal Language Modeling",
    "summarization": "Summarization",
    "translation": "Translation",
    "text2text-generation": "Sequence-to-sequence Language Modeling",
    "image-classification": "Image Classification",
    "audio-classification": "Audio Classification",
    "automatic-speech-recognition": "Automatic Speech Recognition",
}


# --------------------------------------------------------------------------- YAML
def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return ".nan"
        if math.isinf(value):
            return ".inf" if value > 0 else "-.inf"
        return repr(value)
    return json.dumps(str(value), ensure_ascii=False)  # a JSON string is a valid YAML double-quoted scalar


def to_yaml(value: Any, indent: int = 0) -> str:
    """Block-style YAML for nested dicts, lists and scalars (no PyYAML needed).

    Example:
        >>> print(to_yaml({"tags": ["a", "b"], "model-index": [{"name": "m", "results": []}]}))
        tags:
        - "a"
        - "b"
        model-index:
        - name: "m"
          results: []
    """
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        if not value:
            return pad + "{}"
        for key, item in value.items():
            head = f"{pad}{key}:"
            if isinstance(item, (Mapping, list, tuple)) and item:
                nested_indent = indent if isinstance(item, (list, tuple)) else indent + 2
                lines.append(head)
                lines.append(to_yaml(item, nested_indent))
            else:
                lines.append(f"{head} {_empty_or_scalar(item)}")
        return "\n".join(lines)
    if isinstance(value, (list, tuple)):
        if not value:
            return pad + "[]"
        for item in value:
            if isinstance(item, Mapping) and item:
                body = to_yaml(item, indent + 2).splitlines()
                lines.append(f"{pad}- {body[0].lstrip()}")
                lines.extend(body[1:])
            elif isinstance(item, (list, tuple)) and item:
                body = to_yaml(item, indent + 2).splitlines()
                lines.append(f"{pad}- {body[0].lstrip()}")
                lines.extend(body[1:])
            else:
                lines.append(f"{pad}- {_empty_or_scalar(item)}")
        return "\n".join(lines)
    return pad + _scalar(value)


def _empty_or_scalar(value: Any) -> str:
    if isinstance(value, Mapping):
        return "{}"
    if isinstance(value, (list, tuple)):
        return "[]"
    return _scalar(value)


# --------------------------------------------------------------------------- content
def _as_list(value: str | Sequence[str] | None) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e-3 and value != 0 else str(round(value, 4))
    return str(value)


def training_hyperparameters(args: Mapping[str, Any], world_size: int = 1) -> dict[str, Any]:
    """The hyperparameters a card lists, from ``TrainingArguments.to_dict()``.

    Example:
        >>> hp = training_hyperparameters({"learning_rate": 0.001, "per_device_train_batch_size": 8,
        ...     "gradient_accumulation_steps": 2, "seed": 1, "num_train_epochs": 3.0, "fp16": True})
        >>> hp["total_train_batch_size"], hp["num_epochs"], hp["mixed_precision_training"]
        (16, 3.0, 'fp16 (mixed precision)')
    """
    get = args.get
    out: dict[str, Any] = {}
    if get("learning_rate") is not None:
        out["learning_rate"] = get("learning_rate")
    train_bs = get("per_device_train_batch_size")
    eval_bs = get("per_device_eval_batch_size")
    if train_bs is not None:
        out["train_batch_size"] = train_bs
    if eval_bs is not None:
        out["eval_batch_size"] = eval_bs
    if get("seed") is not None:
        out["seed"] = get("seed")
    if world_size > 1:
        out["distributed_type"] = "multi-process data parallel"
        out["num_devices"] = world_size
    ga = get("gradient_accumulation_steps") or 1
    if ga > 1:
        out["gradient_accumulation_steps"] = ga
    if train_bs is not None and (ga > 1 or world_size > 1):
        out["total_train_batch_size"] = train_bs * ga * world_size
    if eval_bs is not None and world_size > 1:
        out["total_eval_batch_size"] = eval_bs * world_size
    optim = get("optim")
    if optim is not None:
        optim_text = str(optim)
        if "adam" in optim_text or "lion" in optim_text:
            optim_text += f" with betas=({get('adam_beta1')},{get('adam_beta2')}) and epsilon={get('adam_epsilon')}"
        if get("optim_args"):
            optim_text += f" and optim_args={get('optim_args')}"
        out["optimizer"] = optim_text
    if get("weight_decay"):
        out["weight_decay"] = get("weight_decay")
    if get("lr_scheduler_type") is not None:
        out["lr_scheduler_type"] = str(get("lr_scheduler_type"))
    if get("warmup_ratio"):
        out["lr_scheduler_warmup_ratio"] = get("warmup_ratio")
    if get("warmup_steps"):
        out["lr_scheduler_warmup_steps"] = get("warmup_steps")
    max_steps = get("max_steps")
    if max_steps is not None and max_steps > 0:
        out["training_steps"] = max_steps
    elif get("num_train_epochs") is not None:
        out["num_epochs"] = get("num_train_epochs")
    if get("fp16"):
        out["mixed_precision_training"] = "fp16 (mixed precision)"
    elif get("bf16"):
        out["mixed_precision_training"] = "bf16 (mixed precision)"
    if get("label_smoothing_factor"):
        out["label_smoothing_factor"] = get("label_smoothing_factor")
    if get("max_grad_norm") not in (None, 1.0):
        out["max_grad_norm"] = get("max_grad_norm")
    return out


def _column_name(metric: str) -> str:
    name = metric[len("eval_"):] if metric.startswith("eval_") else metric
    if name == "loss":
        return "Validation Loss"
    return " ".join(part.capitalize() for part in name.split("_"))


def _eval_metric_names(entry: Mapping[str, Any]) -> list[str]:
    return [
        k for k in entry
        if k.startswith("eval_") and not k.endswith(_SKIPPED_EVAL_SUFFIXES) and "_mem_" not in k
        and isinstance(entry[k], (int, float)) and not isinstance(entry[k], bool)
    ]


def evaluation_table(log_history: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[Any]], dict[str, float]]:
    """The results table of a run: one row per evaluation, with the last training loss
    logged before it (``"No log"`` when there is none), the epoch, the step and each
    evaluation metric. Evaluations at the same step (several datasets) share a row.

    Returns:
        ``(columns, rows, final_metrics)``: the header, the rows, and the metrics of
        the last evaluation (by metric name, ``eval_`` prefix kept).
    """
    metric_names: list[str] = []
    rows: dict[int, dict[str, Any]] = {}
    last_loss: Any = "No log"
    for entry in log_history:
        if "loss" in entry and not any(k.startswith("eval_") for k in entry):
            last_loss = entry["loss"]
            continue
        names = _eval_metric_names(entry)
        if not names:
            continue
        step = entry.get("step", 0)
        row = rows.setdefault(step, {"Training Loss": last_loss, "Epoch": entry.get("epoch"), "Step": step})
        for name in names:
            if name not in metric_names:
                metric_names.append(name)
            row[name] = entry[name]
    first_seen = list(metric_names)
    metric_names = sorted(first_seen, key=lambda n: (n != "eval_loss", first_seen.index(n)))
    columns = ["Training Loss", "Epoch", "Step", *(_column_name(n) for n in metric_names)]
    table = [[row.get(c, "") for c in ("Training Loss", "Epoch", "Step")] + [row.get(n, "") for n in metric_names]
             for row in rows.values()]
    final = {n: rows[max(rows)][n] for n in metric_names if n in rows[max(rows)]} if rows else {}
    return columns, table, final


def _versions() -> dict[str, str]:
    versions = {}
    for label, dist in (("toolkit", "toolkit"), ("PyTorch", "torch"), ("Transformers", "transformers"),
                        ("Datasets", "datasets"), ("Tokenizers", "tokenizers")):
        try:
            versions[label] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def build_model_card(
    args: Mapping[str, Any] | Any,
    log_history: Sequence[Mapping[str, Any]],
    *,
    model_name: str | None = None,
    language: str | Sequence[str] | None = None,
    license: str | None = None,
    tags: str | Sequence[str] | None = None,
    finetuned_from: str | None = None,
    tasks: str | Sequence[str] | None = None,
    dataset_tags: str | Sequence[str] | None = None,
    dataset: str | Sequence[str] | None = None,
    dataset_args: str | Sequence[str] | None = None,
    world_size: int = 1,
    versions: Mapping[str, str] | None = None,
) -> str:
    """The text of a model card (``README.md``).

    Args:
        args: ``TrainingArguments`` (or its ``to_dict()``).
        log_history: ``TrainerState.log_history``.
        model_name: the model's name (default: the last part of ``output_dir``).
        language: language code(s).
        license: license id (e.g. ``"apache-2.0"``).
        tags: extra tags (``"generated_from_trainer"`` is always there).
        finetuned_from: the base model (``base_model`` in the header).
        tasks: task id(s), e.g. ``"text-classification"``.
        dataset_tags: dataset id(s) (``datasets`` in the header).
        dataset: dataset name(s) shown in the card.
        dataset_args: dataset configuration(s).
        world_size: processes that trained (for the total batch sizes).
        versions: framework versions (default: those installed here).

    Returns:
        Markdown with a YAML header.
    """
    args_dict = dict(args.to_dict() if hasattr(args, "to_dict") else args)
    if model_name is None:
        output_dir = str(args_dict.get("output_dir") or "model").rstrip("/")
        model_name = output_dir.rsplit("/", 1)[-1] or "model"
    columns, rows, final = evaluation_table(log_history)
    dataset_ids = _as_list(dataset_tags)
    dataset_names = _as_list(dataset) or dataset_ids
    dataset_configs = _as_list(dataset_args)
    all_tags = ["generated_from_trainer", *(t for t in _as_list(tags) if t != "generated_from_trainer")]

    results = []
    metric_entries = [
        {"name": _column_name(n) if n != "eval_loss" else "Loss", "type": n[len("eval_"):], "value": float(v)}
        for n, v in final.items()
    ]
    for task in _as_list(tasks):
        result: dict[str, Any] = {"task": {"type": task, "name": _TASK_NAMES.get(task, task)}}
        if dataset_ids or dataset_names:
            ds: dict[str, Any] = {"name": (dataset_names or dataset_ids)[0], "type": (dataset_ids or dataset_names)[0]}
            if dataset_configs:
                ds["config"] = dataset_configs[0]
                ds["args"] = dataset_configs[0]
            result["dataset"] = ds
        if metric_entries:
            result["metrics"] = metric_entries
        results.append(result)

    meta: dict[str, Any] = {}
    if language is not None:
        meta["language"] = _as_list(language) if not isinstance(language, str) else language
    if license is not None:
        meta["license"] = license
    if finetuned_from is not None:
        meta["base_model"] = finetuned_from
    meta["tags"] = all_tags
    if dataset_ids:
        meta["datasets"] = dataset_ids
    metric_tags = [n[len("eval_"):] for n in final if n != "eval_loss"]
    if metric_tags:
        meta["metrics"] = metric_tags
    meta["model-index"] = [{"name": model_name, "results": results}]

    out = ["---", to_yaml(meta), "---", "", f"# {model_name}", ""]
    base = f"[{finetuned_from}](https://huggingface.co/{finetuned_from})" if finetuned_from else "a model"
    about = f"This model is {base} fine-tuned" if finetuned_from else "This model was trained"
    on = f" on the {', '.join(dataset_names)} dataset" if dataset_names else " on an unknown dataset"
    out.append(f"{about}{on} with toolkit's Trainer.")
    if final:
        out += ["It achieves the following results on the evaluation set:"]
        out += [f"- {_column_name(n) if n != 'eval_loss' else 'Loss'}: {_fmt(v)}" for n, v in final.items()]
    out += ["", "## Model description", "", "More information needed", "",
            "## Intended uses & limitations", "", "More information needed", "",
            "## Training and evaluation data", "", "More information needed", "",
            "## Training procedure", "", "### Training hyperparameters", "",
            "The following hyperparameters were used during training:"]
    out += [f"- {k}: {v}" for k, v in training_hyperparameters(args_dict, world_size).items()]
    out += ["", "### Training results", ""]
    if rows:
        out.append("| " + " | ".join(columns) + " |")
        out.append("|" + "|".join(":---:" for _ in columns) + "|")
        out += ["| " + " | ".join(_fmt(v) for v in row) + " |" for row in rows]
    else:
        out.append("No evaluation was run during training.")
    out += ["", "### Framework versions", ""]
    out += [f"- {name} {version}" for name, version in (versions if versions is not None else _versions()).items()]
    return "\n".join(out) + "\n"


def write_model_card(text: str, output_dir: str) -> str:
    """Write ``text`` as ``<output_dir>/README.md`` (local folder or fsspec URL); return its path."""
    storage.makedirs(output_dir)
    path = storage.join(output_dir, MODEL_CARD_NAME)
    storage.write_bytes(path, text.encode("utf-8"))
    return path


def _base_model_name(model: Any) -> str | None:
    """The Hub id the model was loaded from (``config._name_or_path``), when it looks like one."""
    name = getattr(getattr(model, "config", None), "_name_or_path", None)
    if not isinstance(name, str) or not name or name.startswith(("/", ".", "~")) or "://" in name:
        return None
    return name if name.count("/") <= 1 else None


def create_trainer_model_card(trainer: Any, **kwargs: Any) -> str | None:
    """Build the card from a Trainer (arguments, log history, processes, base model) and
    write it into ``args.output_dir`` (main process only). Returns the path written.

    ``kwargs`` are `build_model_card`'s descriptive fields; ``model_name`` defaults to
    the last part of ``hub_model_id`` (else of ``output_dir``), ``finetuned_from`` to the
    model's ``config._name_or_path`` when it names a Hub model.
    """
    if not trainer.is_world_process_zero():
        return None
    args = trainer.args
    if kwargs.get("model_name") is None and args.hub_model_id:
        kwargs["model_name"] = str(args.hub_model_id).rstrip("/").rsplit("/", 1)[-1]
    if kwargs.get("finetuned_from") is None:
        kwargs["finetuned_from"] = _base_model_name(trainer.model)
    text = build_model_card(
        args.to_dict(), trainer.state.log_history, world_size=trainer.strategy.world_size, **kwargs
    )
    return write_model_card(text, args.output_dir)
