"""Bad inputs: every one gets the expected exception with a message that names the
problem, raised before anything is damaged: after each, ``output_dir`` holds no partial
checkpoint, and whatever it held before is byte-for-byte unchanged.

Each row of ``CASES`` is ``(id, action, exception type, regex)``; ``action(out, h, ckpt)``
performs the bad call, with ``out`` the output_dir, ``h`` the shared tiny models
(tests/trainer/conftest.py) and ``ckpt`` a factory that copies a prepared checkpoint
into ``out`` (for the cases about checkpoints).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from toolkit import Trainer, TrainingArguments
from toolkit.checkpoint import FsspecCheckpointIO, UnsafeCheckpointError

pytestmark = pytest.mark.slow  # the reliability suites run in CI: pytest -m slow tests/reliability
IO = FsspecCheckpointIO()


# ----------------------------------------------------------------------------- models and helpers
class NoLoss(nn.Module):
    """Returns logits only, even when given labels."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x, labels=None):
        return {"logits": self.lin(x)}


class TupleNoLoss(NoLoss):
    def forward(self, x, labels=None):
        return (self.lin(x),)


class FloatLoss(NoLoss):
    def forward(self, x, labels=None):
        return {"loss": 1.0, "logits": self.lin(x)}


class NanAtStep3(nn.Module):
    """A regressor whose third training forward returns a NaN loss."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.calls = 0

    def forward(self, x, labels=None):
        out = self.lin(x).squeeze(-1)
        loss = nn.functional.mse_loss(out, labels)
        if self.training:
            self.calls += 1
            if self.calls == 3:
                loss = loss * float("nan")
        return {"loss": loss, "logits": out}


class _RunsCode:
    """Unpickling this calls ``open(marker, "w")``: a pickle that would run code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _args(h, out, **kw):
    values = dict(max_steps=4, per_device_train_batch_size=2, save_strategy="steps", save_steps=2)
    values.update(kw)
    return h.make_args(out, **values)


def _train(h, out, model=None, data=None, resume=None, trainer_kw=None, **kw):
    model = model if model is not None else h.seeded(h.Regressor)
    data = data if data is not None else h.regression_data(8)
    trainer = Trainer(model, _args(h, out, **kw), train_dataset=data, **(trainer_kw or {}))
    return trainer.train(resume_from_checkpoint=resume)


def arg_case(**kw) -> Callable:
    return lambda out, h, ckpt: h.make_args(out, **kw)


def _evil_checkpoint(out, h, ckpt):
    source = ckpt(out.parent / "source")
    files = IO.load(str(source))
    files["optimizer.pt"] = {"state": _RunsCode(str(out.parent / "code-ran"))}
    IO.save(files, str(out / "checkpoint-2"))
    ckpt.snapshot()
    try:
        _train(h, out, resume=True)
    finally:
        assert not (out.parent / "code-ran").exists(), "the pickle ran code"


def _output_dir_is_file(out, h, ckpt):
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("not a folder")
    _train(h, out)


def _earlier_run(out, h, ckpt):
    ckpt(out)
    _train(h, out)


def _older_checkpoint(out, h, ckpt):
    ckpt(out)
    shutil.copytree(out / "checkpoint-2", out / "checkpoint-4")  # a newer one of the same run
    ckpt.snapshot()
    _train(h, out, resume=str(out / "checkpoint-2"))


# id, action, exception, regex
CASES: list[tuple[str, Callable, type[BaseException], str]] = [
    # --- argument values
    (
        "train_batch_size_0",
        arg_case(per_device_train_batch_size=0),
        ValueError,
        r"per_device_train_batch_size must be an integer >= 1, got 0",
    ),
    (
        "eval_batch_size_negative",
        arg_case(per_device_eval_batch_size=-1),
        ValueError,
        r"per_device_eval_batch_size must be an integer >= 1",
    ),
    (
        "train_batch_size_float",
        arg_case(per_device_train_batch_size=2.5),
        ValueError,
        r"per_device_train_batch_size must be an integer",
    ),
    (
        "accumulation_0",
        arg_case(gradient_accumulation_steps=0),
        ValueError,
        r"gradient_accumulation_steps must be",
    ),
    ("learning_rate_negative", arg_case(learning_rate=-0.1), ValueError, r"learning_rate must be >= 0"),
    ("max_steps_-2", arg_case(max_steps=-2), ValueError, r"max_steps must be an integer >= -1"),
    ("max_steps_bool", arg_case(max_steps=True), ValueError, r"max_steps must be an integer"),
    ("epochs_negative", arg_case(num_train_epochs=-1), ValueError, r"num_train_epochs must be >= 0"),
    ("warmup_ratio_1.5", arg_case(warmup_ratio=1.5), ValueError, r"warmup_ratio must be in \[0, 1\]"),
    ("warmup_steps_negative", arg_case(warmup_steps=-3), ValueError, r"warmup_steps must be an integer >= 0"),
    ("save_total_limit_negative", arg_case(save_total_limit=-1), ValueError, r"save_total_limit must be"),
    ("workers_negative", arg_case(dataloader_num_workers=-1), ValueError, r"dataloader_num_workers must be"),
    (
        "eval_accumulation_0",
        arg_case(eval_accumulation_steps=0),
        ValueError,
        r"eval_accumulation_steps must be",
    ),
    ("eval_delay_negative", arg_case(eval_delay=-1), ValueError, r"eval_delay must be None or >= 0"),
    ("ddp_timeout_0", arg_case(ddp_timeout=0), ValueError, r"ddp_timeout must be None or > 0"),
    ("local_rank_-2", arg_case(local_rank=-2), ValueError, r"local_rank must be an integer >= -1"),
    ("save_steps_0", arg_case(save_strategy="steps", save_steps=0), ValueError, r"save_steps must be > 0"),
    (
        "logging_steps_fraction_above_1",
        arg_case(logging_steps=2.5),
        ValueError,
        r"logging_steps must be an integer when > 1",
    ),
    (
        "eval_steps_text",
        arg_case(evaluation_strategy="steps", eval_steps="ten"),
        ValueError,
        r"eval_steps must be a number",
    ),
    # --- names
    (
        "evaluation_strategy_name",
        arg_case(evaluation_strategy="sometimes"),
        ValueError,
        r"evaluation_strategy='sometimes' is not valid; accepted",
    ),
    (
        "save_strategy_name",
        arg_case(save_strategy="hourly"),
        ValueError,
        r"save_strategy='hourly' is not valid",
    ),
    ("logging_strategy_name", arg_case(logging_strategy="never"), ValueError, r"logging_strategy='never'"),
    ("scheduler_name", arg_case(lr_scheduler_type="zigzag"), ValueError, r"lr_scheduler_type='zigzag'"),
    ("optim_name", arg_case(optim="sgdx"), ValueError, r"optim='sgdx' is not valid"),
    ("log_level_name", arg_case(log_level="loud"), ValueError, r"log_level='loud' is not valid; accepted"),
    (
        "log_level_replica_name",
        arg_case(log_level_replica="chatty"),
        ValueError,
        r"log_level_replica='chatty'",
    ),
    (
        "nan_inf_policy_name",
        arg_case(nan_inf_policy="ignore"),
        ValueError,
        r"nan_inf_policy='ignore' is not valid; accepted: 'warn', 'skip', 'raise'",
    ),
    (
        "half_precision_backend_name",
        arg_case(half_precision_backend="foo"),
        ValueError,
        r"half_precision_backend='foo' is not valid",
    ),
    ("ddp_backend_name", arg_case(ddp_backend="mpi2"), ValueError, r"ddp_backend='mpi2' is not valid"),
    ("hub_strategy_name", arg_case(hub_strategy="sometimes"), ValueError, r"hub_strategy='sometimes'"),
    (
        "loss_normalization_name",
        arg_case(loss_normalization="median"),
        ValueError,
        r"loss_normalization='median'",
    ),
    ("debug_option", arg_case(debug="verbose_everything"), ValueError, r"debug"),
    ("fsdp_option", arg_case(fsdp="bogus_shard"), ValueError, r"fsdp"),
    ("report_to_type", arg_case(report_to=5), ValueError, r"report_to must be a str or a list of str"),
    (
        "report_to_none_and_more",
        arg_case(report_to=["none", "tensorboard"]),
        ValueError,
        r"report_to cannot combine 'none'",
    ),
    (
        "label_names_type",
        arg_case(label_names=[1, 2]),
        ValueError,
        r"label_names must be None or a list of str",
    ),
    (
        "output_dir_empty",
        lambda out, h, ckpt: TrainingArguments("", report_to="none"),
        ValueError,
        r"output_dir must be a non-empty str",
    ),
    (
        "output_dir_none",
        lambda out, h, ckpt: TrainingArguments(None, report_to="none"),
        ValueError,
        r"output_dir must be a non-empty str",
    ),
    # --- argument combinations
    ("fp16_and_bf16", arg_case(fp16=True, bf16=True), ValueError, r"fp16 and bf16 cannot both be True"),
    (
        "full_eval_fp16_and_bf16",
        arg_case(fp16_full_eval=True, bf16_full_eval=True),
        ValueError,
        r"fp16_full_eval and bf16_full_eval cannot both be True",
    ),
    (
        "best_model_strategies_differ",
        arg_case(load_best_model_at_end=True, save_strategy="steps"),
        ValueError,
        r"load_best_model_at_end requires save_strategy to match evaluation_strategy",
    ),
    (
        "best_model_save_not_multiple",
        arg_case(
            load_best_model_at_end=True,
            save_strategy="steps",
            save_steps=3,
            evaluation_strategy="steps",
            eval_steps=2,
        ),
        ValueError,
        r"save_steps to be a round multiple of eval_steps",
    ),
    (
        "plateau_without_eval",
        arg_case(lr_scheduler_type="reduce_lr_on_plateau"),
        ValueError,
        r"reduce_lr_on_plateau.* needs evaluation",
    ),
    # --- data
    (
        "stream_without_max_steps",
        lambda out, h, ckpt: _train(h, out, data=h.Stream(h.regression_data(8)), max_steps=-1),
        ValueError,
        r"max_steps: the training dataset has no length",
    ),
    (
        "no_train_dataset",
        lambda out, h, ckpt: Trainer(h.seeded(h.Regressor), _args(h, out)).train(),
        ValueError,
        r"training requires a `train_dataset`",
    ),
    (
        "empty_train_dataset",
        lambda out, h, ckpt: _train(h, out, data=[]),
        ValueError,
        r"train_dataset: the training dataloader is empty",
    ),
    (
        "zero_epochs",
        lambda out, h, ckpt: _train(h, out, max_steps=-1, num_train_epochs=0),
        ValueError,
        r"num_train_epochs=0 gives no training step",
    ),
    (
        "items_not_dicts",
        lambda out, h, ckpt: _train(h, out, data=list(range(8))),
        TypeError,
        r"default_data_collator accepts items that are dicts.*got int",
    ),
    (
        "collator_returns_none",
        lambda out, h, ckpt: _train(h, out, trainer_kw={"data_collator": lambda b: None}),
        TypeError,
        r"batch received was None: data_collator must return",
    ),
    (
        "collator_returns_empty_dict",
        lambda out, h, ckpt: _train(h, out, trainer_kw={"data_collator": lambda b: {}}),
        ValueError,
        r"batch received was empty",
    ),
    (
        "collator_returns_unknown_keys",
        lambda out, h, ckpt: _train(h, out, trainer_kw={"data_collator": lambda b: {"foo": torch.zeros(2)}}),
        TypeError,
        r"unexpected keyword argument 'foo'",
    ),
    (
        "label_names_not_in_batch",
        lambda out, h, ckpt: _train(h, out, label_names=["target"]),
        ValueError,
        r"label_names=\['target'\]: none of them is in the training batch, whose keys are \['labels', 'x'\]",
    ),
    (
        "float_labels_for_classifier",
        lambda out, h, ckpt: _train(h, out, model=h.seeded(h.Classifier)),
        RuntimeError,
        r"dtype",
    ),
    (
        "eval_strategy_without_eval_dataset",
        lambda out, h, ckpt: _train(h, out, evaluation_strategy="steps", eval_steps=2),
        ValueError,
        r"evaluation_strategy='steps' evaluates during training, but the Trainer has no eval_dataset",
    ),
    (
        "evaluate_without_eval_dataset",
        lambda out, h, ckpt: Trainer(h.seeded(h.Regressor), _args(h, out)).evaluate(),
        ValueError,
        r"evaluation requires an `eval_dataset`",
    ),
    # --- models
    (
        "model_without_loss",
        lambda out, h, ckpt: _train(h, out, model=NoLoss()),
        ValueError,
        r"did not return a loss from the inputs; it returned the keys \['logits'\]",
    ),
    (
        "model_tuple_without_loss",
        lambda out, h, ckpt: _train(h, out, model=TupleNoLoss()),
        ValueError,
        r"first element has shape \(2, 1\), not a scalar loss",
    ),
    (
        "model_loss_not_a_tensor",
        lambda out, h, ckpt: _train(h, out, model=FloatLoss()),
        TypeError,
        r"training loss must be a torch.Tensor, got float",
    ),
    (
        "nan_loss_with_raise_policy",
        lambda out, h, ckpt: _train(h, out, model=NanAtStep3(), nan_inf_policy="raise", save_steps=1),
        FloatingPointError,
        r"step 3",
    ),
    (
        "no_model_no_model_init",
        lambda out, h, ckpt: Trainer(None, _args(h, out)),
        RuntimeError,
        r"requires either a `model` or a `model_init`",
    ),
    (
        "model_init_returns_none",
        lambda out, h, ckpt: Trainer(None, _args(h, out), model_init=lambda: None),
        RuntimeError,
        r"model_init should not return None",
    ),
    (
        "model_init_with_optimizers",
        lambda out, h, ckpt: Trainer(
            None,
            _args(h, out),
            model_init=lambda: h.seeded(h.Regressor),
            optimizers=(torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1), None),
        ),
        RuntimeError,
        r"Passing `optimizers` is not allowed with `model_init`",
    ),
    (
        "tokenizer_and_processing_class",
        lambda out, h, ckpt: Trainer(
            h.seeded(h.Regressor), _args(h, out), tokenizer=object(), processing_class=object()
        ),
        ValueError,
        r"either `tokenizer` or its newer name `processing_class`",
    ),
    (
        "train_unknown_keyword",
        lambda out, h, ckpt: Trainer(
            h.seeded(h.Regressor), _args(h, out), train_dataset=h.regression_data(8)
        ).train(epochs=3),
        TypeError,
        r"unexpected keyword arguments: epochs",
    ),
    # --- output_dir and checkpoints
    ("output_dir_is_a_file", _output_dir_is_file, ValueError, r"output_dir=.* is a file, not a folder"),
    (
        "earlier_run_in_output_dir",
        _earlier_run,
        ValueError,
        r"already holds files of an earlier run.*"
        r"overwrite_output_dir=True",
    ),
    ("resume_older_checkpoint_than_newest", _older_checkpoint, ValueError, r"checkpoint-4"),
    (
        "resume_true_without_checkpoint",
        lambda out, h, ckpt: _train(h, out, resume=True),
        ValueError,
        r"resume_from_checkpoint=True: no valid checkpoint found in output_dir",
    ),
    (
        "resume_missing_path",
        lambda out, h, ckpt: _train(h, out, resume=str(out / "checkpoint-9")),
        ValueError,
        r"resume_from_checkpoint=.*checkpoint-9' is not a valid checkpoint folder",
    ),
    (
        "resume_path_is_a_file",
        lambda out, h, ckpt: (
            out.mkdir(parents=True),
            (out / "f.bin").write_bytes(b"x"),
            _train(h, out, resume=str(out / "f.bin")),
        ),
        ValueError,
        r"f.bin' is not a valid checkpoint folder",
    ),
    (
        "resume_not_a_path",
        lambda out, h, ckpt: _train(h, out, resume=123),
        TypeError,
        r"resume_from_checkpoint must be a checkpoint folder.*got int 123",
    ),
    (
        "resume_incompatible_shape",
        lambda out, h, ckpt: (
            ckpt(out),
            _train(
                h,
                out,
                model=h.seeded(h.Regressor, n_features=5),
                data=h.regression_data(8, n_features=5),
                resume=True,
            ),
        ),
        ValueError,
        r"(?s)checkpoint-2' does not fit this model.*size mismatch for lin.weight",
    ),
    (
        "resume_save_only_model_checkpoint",
        lambda out, h, ckpt: (ckpt(out, only_model=True), _train(h, out, resume=True)),
        ValueError,
        r"holds no optimizer state \(saved with save_only_model\)",
    ),
    ("resume_pickle_that_runs_code", _evil_checkpoint, UnsafeCheckpointError, r"optimizer.pt"),
]


# ----------------------------------------------------------------------------- the test
@pytest.fixture(scope="module")
def prepared(tmp_path_factory, h) -> dict[bool, Path]:
    """Committed ``checkpoint-2`` folders of a 2-step Regressor run (full, and model-only)."""
    base = tmp_path_factory.mktemp("prepared")
    folders = {}
    for only_model in (False, True):
        out = base / f"only_model={only_model}"
        _train(h, out, max_steps=2, save_only_model=only_model)
        folders[only_model] = out / "checkpoint-2"
    return folders


class Prepared:
    """Copies prepared checkpoints into a case's folders and remembers what ``out`` held
    before the bad call (`snapshot`)."""

    def __init__(self, prepared: dict[bool, Path], out: Path) -> None:
        self.prepared, self.out = prepared, out
        self.seeded: dict[str, bytes] = {}

    def __call__(self, folder: Path, only_model: bool = False) -> Path:
        target = folder / "checkpoint-2"
        shutil.copytree(self.prepared[only_model], target)
        self.snapshot()
        return target

    def snapshot(self) -> None:
        self.seeded = _snapshot(self.out)


def _snapshot(root: Path) -> dict[str, bytes]:
    if not root.is_dir():
        return {str(root): root.read_bytes()} if root.exists() else {}
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def assert_no_partial_checkpoint(out: Path) -> None:
    """No temporary folder and no uncommitted or damaged ``checkpoint-*`` under ``out``."""
    if not out.is_dir():
        return
    for entry in out.iterdir():
        assert ".tmp-" not in entry.name, f"partial checkpoint left: {entry}"
        if entry.name.startswith("checkpoint-"):
            IO.verify(str(entry))  # raises when uncommitted or damaged


def test_the_table_has_at_least_50_distinct_cases() -> None:
    ids = [c[0] for c in CASES]
    assert len(ids) == len(set(ids)) and len(ids) >= 50, len(ids)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused_clearly_and_damages_nothing(
    case: tuple[str, Callable, type[BaseException], str], tmp_path: Path, h: Any, prepared: dict[bool, Path]
) -> None:
    name, action, exc_type, pattern = case
    out = tmp_path / "out"
    ckpt = Prepared(prepared, out)
    with pytest.raises(exc_type, match=pattern) as info:
        action(out, h, ckpt)
    assert str(info.value), "the error has no message"
    assert_no_partial_checkpoint(out)
    if name == "nan_loss_with_raise_policy":
        # the steps before the NaN were checkpointed and committed; nothing after it
        names = sorted(p.name for p in out.iterdir() if p.name.startswith("checkpoint-"))
        assert names == ["checkpoint-1", "checkpoint-2"], names
        return
    after = _snapshot(out)
    # everything that was there before is unchanged, and the failed call wrote nothing of its own
    for path, data in ckpt.seeded.items():
        assert after.get(path) == data, f"{path} was changed or removed"
    new = sorted(set(after) - set(ckpt.seeded) - ({str(out)} if name == "output_dir_is_a_file" else set()))
    if name == "resume_path_is_a_file":
        new = [n for n in new if n != "f.bin"]
    assert not [n for n in new if n.startswith("checkpoint-") or n.endswith(".safetensors")], new
