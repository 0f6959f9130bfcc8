"""Tests for toolkit.args (TrainingArguments, Seq2SeqTrainingArguments) and toolkit.utils.env."""

from __future__ import annotations

import ast
import copy
import dataclasses
import inspect
import json
import logging
import os
import pickle
import re
from datetime import timedelta
from pathlib import Path

import pytest
import torch

from toolkit.args import (
    ARGUMENT_ALIASES,
    PENDING_FEATURES,
    Seq2SeqTrainingArguments,
    TrainingArguments,
)
from toolkit.types import (
    DebugOption,
    FSDPOption,
    HubStrategy,
    IntervalStrategy,
    LossNormalization,
    OptimizerNames,
    SchedulerType,
)
from toolkit.utils.env import DistributedEnv, detect_distributed_env

REPO = Path(__file__).resolve().parents[2]
REFERENCE = Path("/work/shared/reference/hf-trainer-v4.34.0-docs.md")

# The v4.34.0 signature, in order, with its defaults (hand-copied from the reference docs).
HF_434_FIELDS: list[tuple[str, object]] = [
    ("output_dir", dataclasses.MISSING),
    ("overwrite_output_dir", False),
    ("do_train", False),
    ("do_eval", False),
    ("do_predict", False),
    ("evaluation_strategy", "no"),
    ("prediction_loss_only", False),
    ("per_device_train_batch_size", 8),
    ("per_device_eval_batch_size", 8),
    ("per_gpu_train_batch_size", None),
    ("per_gpu_eval_batch_size", None),
    ("gradient_accumulation_steps", 1),
    ("eval_accumulation_steps", None),
    ("eval_delay", 0),
    ("learning_rate", 5e-05),
    ("weight_decay", 0.0),
    ("adam_beta1", 0.9),
    ("adam_beta2", 0.999),
    ("adam_epsilon", 1e-08),
    ("max_grad_norm", 1.0),
    ("num_train_epochs", 3.0),
    ("max_steps", -1),
    ("lr_scheduler_type", "linear"),
    ("warmup_ratio", 0.0),
    ("warmup_steps", 0),
    ("log_level", "passive"),
    ("log_level_replica", "warning"),
    ("log_on_each_node", True),
    ("logging_dir", None),
    ("logging_strategy", "steps"),
    ("logging_first_step", False),
    ("logging_steps", 500),
    ("logging_nan_inf_filter", True),
    ("save_strategy", "steps"),
    ("save_steps", 500),
    ("save_total_limit", None),
    ("save_safetensors", False),
    ("save_on_each_node", False),
    ("no_cuda", False),
    ("use_cpu", False),
    ("use_mps_device", False),
    ("seed", 42),
    ("data_seed", None),
    ("jit_mode_eval", False),
    ("use_ipex", False),
    ("bf16", False),
    ("fp16", False),
    ("fp16_opt_level", "O1"),
    ("half_precision_backend", "auto"),
    ("bf16_full_eval", False),
    ("fp16_full_eval", False),
    ("tf32", None),
    ("local_rank", -1),
    ("ddp_backend", None),
    ("tpu_num_cores", None),
    ("tpu_metrics_debug", False),
    ("debug", ""),
    ("dataloader_drop_last", False),
    ("eval_steps", None),
    ("dataloader_num_workers", 0),
    ("past_index", -1),
    ("run_name", None),
    ("disable_tqdm", None),
    ("remove_unused_columns", True),
    ("label_names", None),
    ("load_best_model_at_end", False),
    ("metric_for_best_model", None),
    ("greater_is_better", None),
    ("ignore_data_skip", False),
    ("sharded_ddp", ""),
    ("fsdp", ""),
    ("fsdp_min_num_params", 0),
    ("fsdp_config", None),
    ("fsdp_transformer_layer_cls_to_wrap", None),
    ("deepspeed", None),
    ("label_smoothing_factor", 0.0),
    ("optim", "adamw_torch"),
    ("optim_args", None),
    ("adafactor", False),
    ("group_by_length", False),
    ("length_column_name", "length"),
    ("report_to", None),
    ("ddp_find_unused_parameters", None),
    ("ddp_bucket_cap_mb", None),
    ("ddp_broadcast_buffers", None),
    ("dataloader_pin_memory", True),
    ("skip_memory_metrics", True),
    ("use_legacy_prediction_loop", False),
    ("push_to_hub", False),
    ("resume_from_checkpoint", None),
    ("hub_model_id", None),
    ("hub_strategy", "every_save"),
    ("hub_token", None),
    ("hub_private_repo", False),
    ("hub_always_push", False),
    ("gradient_checkpointing", False),
    ("include_inputs_for_metrics", False),
    ("fp16_backend", "auto"),
    ("push_to_hub_model_id", None),
    ("push_to_hub_organization", None),
    ("push_to_hub_token", None),
    ("mp_parameters", ""),
    ("auto_find_batch_size", False),
    ("full_determinism", False),
    ("torchdynamo", None),
    ("ray_scope", "last"),
    ("ddp_timeout", 1800),
    ("torch_compile", False),
    ("torch_compile_backend", None),
    ("torch_compile_mode", None),
    ("dispatch_batches", None),
    ("include_tokens_per_second", False),
]
DELIBERATE_DIFFERENCES = {"save_safetensors": True}
TOOLKIT_EXTRAS = [
    ("loss_normalization", "items"),
    ("save_only_model", False),
    ("nan_inf_policy", "warn"),
    ("preemption_checkpoint", True),
    ("save_async", False),
]
SEQ2SEQ_EXTRAS = [
    ("sortish_sampler", False),
    ("predict_with_generate", False),
    ("generation_max_length", None),
    ("generation_num_beams", None),
    ("generation_config", None),
]
# Fields whose value __post_init__ fills in or normalises (checked by their own tests).
POST_INIT_CHANGES = {"logging_dir", "run_name", "disable_tqdm", "report_to", "debug", "fsdp", "sharded_ddp"}

DIST_VARS = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "GROUP_RANK",
    "NODE_RANK",
    "LOCAL_SIZE",
    "CROSS_RANK",
    "SLURM_NTASKS",
    "SLURM_PROCID",
    "SLURM_LOCALID",
    "SLURM_NODEID",
    "SLURM_NTASKS_PER_NODE",
    "SLURM_STEP_TASKS_PER_NODE",
    "SLURM_TASKS_PER_NODE",
)


@pytest.fixture(autouse=True)
def _single_process(monkeypatch):
    """Each test starts as a plain single process, with the toolkit logger level restored."""
    for name in DIST_VARS:
        monkeypatch.delenv(name, raising=False)
    toolkit_logger = logging.getLogger("toolkit")
    level = toolkit_logger.level
    yield
    toolkit_logger.setLevel(level)


def make(**kwargs) -> TrainingArguments:
    return TrainingArguments("out_dir", **kwargs)


# ----------------------------------------------------------------------------- fields


def test_fields_match_434_signature_in_order_with_defaults():
    fields = dataclasses.fields(TrainingArguments)
    got = [(f.name, f.default) for f in fields]
    expected = [(n, DELIBERATE_DIFFERENCES.get(n, d)) for n, d in HF_434_FIELDS] + TOOLKIT_EXTRAS
    assert [n for n, _ in got] == [n for n, _ in expected]
    for (name, default), (_, want) in zip(got, expected):
        assert default == want and type(default) is type(want), name


def test_expected_table_agrees_with_reference_docs():
    if not REFERENCE.exists():
        pytest.skip("reference docs not available")
    lines = REFERENCE.read_text(encoding="utf-8").splitlines()
    heading = lines.index("### class transformers.TrainingArguments")
    line = next(x for x in lines[heading:] if x.startswith("( output\\_dir"))
    text = line.replace("\\", "")[1:].rstrip(" )")
    names = [n for n, _ in HF_434_FIELDS]
    starts, pos = [], 0
    for name in names:
        pos = text.index(f"{name}: ", pos)
        starts.append(pos)
        pos += len(name)
    assert text[starts[-1] :].count(": ") == 1  # nothing after the last field
    for i, (name, default) in enumerate(HF_434_FIELDS):
        chunk = text[starts[i] : starts[i + 1] if i + 1 < len(starts) else len(text)]
        if " = " not in chunk:
            assert default is dataclasses.MISSING, name
            continue
        parsed = ast.literal_eval(chunk.rsplit(" = ", 1)[1].strip())
        assert parsed == default, name


def test_every_field_has_help_text():
    for cls in (TrainingArguments, Seq2SeqTrainingArguments):
        for f in dataclasses.fields(cls):
            assert isinstance(f.metadata.get("help"), str) and len(f.metadata["help"]) > 10, f.name


def test_instance_keeps_defaults_for_untouched_fields():
    args = make()
    for name, default in HF_434_FIELDS[1:] + TOOLKIT_EXTRAS:
        if name in POST_INIT_CHANGES:
            continue
        assert getattr(args, name) == DELIBERATE_DIFFERENCES.get(name, default), name
    assert args.save_safetensors is True
    assert args.tf32 is None


def test_output_dir_is_required_and_positional():
    params = list(inspect.signature(TrainingArguments).parameters.values())
    assert params[0].name == "output_dir" and params[0].default is inspect.Parameter.empty
    with pytest.raises(TypeError, match="output_dir"):
        TrainingArguments()
    assert TrainingArguments(Path("p") / "q").output_dir == os.path.join("p", "q")


def test_seq2seq_fields_come_last_with_defaults():
    fields = dataclasses.fields(Seq2SeqTrainingArguments)
    assert [(f.name, f.default) for f in fields[-5:]] == SEQ2SEQ_EXTRAS
    assert len(fields) == len(HF_434_FIELDS) + len(TOOLKIT_EXTRAS) + len(SEQ2SEQ_EXTRAS)
    args = Seq2SeqTrainingArguments("o", predict_with_generate=True, generation_max_length=32)
    assert args.predict_with_generate and args.generation_max_length == 32 and not args.sortish_sampler


# ----------------------------------------------------------------------------- aliases, unknown names


def test_alias_table_and_mapping():
    assert ARGUMENT_ALIASES["eval_strategy"] == "evaluation_strategy"
    args = make(eval_strategy="epoch")
    assert args.evaluation_strategy == IntervalStrategy.EPOCH and args.do_eval
    same = make(eval_strategy="epoch", evaluation_strategy="epoch")
    assert same.evaluation_strategy == IntervalStrategy.EPOCH


def test_alias_conflict_is_an_error():
    with pytest.raises(ValueError, match="eval_strategy.*evaluation_strategy"):
        make(eval_strategy="steps", evaluation_strategy="epoch")


def test_aliases_reach_subclasses():
    assert Seq2SeqTrainingArguments("o", eval_strategy="steps", eval_steps=5).evaluation_strategy == "steps"

    @dataclasses.dataclass
    class Mine(TrainingArguments):
        extra: int = dataclasses.field(default=1, metadata={"help": "an extra field"})

    mine = Mine("o", eval_strategy="epoch", extra=3)
    assert mine.evaluation_strategy == IntervalStrategy.EPOCH and mine.extra == 3
    with pytest.raises(TypeError, match="Mine got an unexpected argument 'extar'; did you mean 'extra'"):
        Mine("o", extar=3)


def test_unknown_argument_suggests_nearest_name():
    with pytest.raises(TypeError) as info:
        make(learning_rte=1e-3)
    assert str(info.value) == (
        "TrainingArguments got an unexpected argument 'learning_rte'; did you mean 'learning_rate'?"
    )
    with pytest.raises(TypeError, match="'eval_stratgy'; did you mean 'eval_strategy'"):
        make(eval_stratgy="steps")
    with pytest.raises(TypeError) as info:
        make(zzzzqqq=1)
    assert "zzzzqqq" in str(info.value) and "did you mean" not in str(info.value)


def test_signature_is_introspectable_and_replace_works():
    sig = inspect.signature(Seq2SeqTrainingArguments)
    assert "generation_config" in sig.parameters and "self" not in sig.parameters
    args = make(learning_rate=0.25)
    changed = dataclasses.replace(args, seed=7)
    assert changed.seed == 7 and changed.learning_rate == 0.25
    assert copy.deepcopy(args) == args
    assert pickle.loads(pickle.dumps(args)) == args


# ----------------------------------------------------------------------------- enums


@pytest.mark.parametrize(
    "name, value, enum_cls",
    [
        ("evaluation_strategy", "epoch", IntervalStrategy),
        ("logging_strategy", "no", IntervalStrategy),
        ("save_strategy", "epoch", IntervalStrategy),
        ("lr_scheduler_type", "cosine", SchedulerType),
        ("optim", "sgd", OptimizerNames),
        ("hub_strategy", "checkpoint", HubStrategy),
        ("loss_normalization", "micro_batch", LossNormalization),
    ],
)
def test_enum_fields_accept_str_and_enum(name, value, enum_cls):
    from_str = make(**{name: value})
    from_enum = make(**{name: enum_cls(value)})
    assert isinstance(getattr(from_str, name), enum_cls)
    assert getattr(from_str, name) is getattr(from_enum, name) is enum_cls(value)


@pytest.mark.parametrize(
    "name",
    [
        "evaluation_strategy",
        "logging_strategy",
        "save_strategy",
        "optim",
        "hub_strategy",
        "loss_normalization",
    ],
)
def test_enum_fields_reject_unknown_with_accepted_values(name):
    with pytest.raises(ValueError, match=rf"^{name}='bogus' is not valid; accepted: '"):
        make(**{name: "bogus"})


def test_unknown_scheduler_lists_choices():
    with pytest.raises(ValueError) as info:
        make(lr_scheduler_type="foo")
    message = str(info.value)
    assert message.startswith("lr_scheduler_type='foo' is not valid; accepted:")
    assert all(repr(s.value) in message for s in SchedulerType)


@pytest.mark.parametrize(
    "name, bad",
    [
        ("log_level", "loud"),
        ("log_level_replica", "shout"),
        ("nan_inf_policy", "ignore"),
        ("half_precision_backend", "x"),
        ("ddp_backend", "tcp"),
    ],
)
def test_string_choices_rejected(name, bad):
    with pytest.raises(ValueError, match=rf"{name}='{bad}' is not valid; accepted"):
        make(**{name: bad})


def test_log_level_numbers_are_accepted_as_names():
    assert make(log_level=logging.INFO, log_level_replica=-1).log_level == "info"
    assert make(log_level_replica=-1).log_level_replica == "passive"


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "kwargs, field_name",
    [
        ({"per_device_train_batch_size": 0}, "per_device_train_batch_size"),
        ({"per_device_eval_batch_size": -2}, "per_device_eval_batch_size"),
        ({"per_gpu_train_batch_size": 0}, "per_gpu_train_batch_size"),
        ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"),
        ({"eval_accumulation_steps": 0}, "eval_accumulation_steps"),
        ({"learning_rate": -1e-3}, "learning_rate"),
        ({"max_steps": 2.5}, "max_steps"),
        ({"max_steps": -5}, "max_steps"),
        ({"num_train_epochs": -1}, "num_train_epochs"),
        ({"warmup_ratio": 1.5}, "warmup_ratio"),
        ({"warmup_ratio": -0.1}, "warmup_ratio"),
        ({"warmup_steps": -1}, "warmup_steps"),
        ({"logging_steps": 0}, "logging_steps"),
        ({"logging_steps": -3}, "logging_steps"),
        ({"logging_steps": 10.5}, "logging_steps"),
        ({"save_steps": 0}, "save_steps"),
        ({"save_steps": 12.25}, "save_steps"),
        ({"evaluation_strategy": "steps", "eval_steps": 0}, "eval_steps"),
        ({"evaluation_strategy": "steps", "eval_steps": 7.5}, "eval_steps"),
        ({"save_total_limit": -1}, "save_total_limit"),
        ({"eval_delay": -1}, "eval_delay"),
        ({"dataloader_num_workers": -1}, "dataloader_num_workers"),
        ({"ddp_timeout": 0}, "ddp_timeout"),
        ({"local_rank": -2}, "local_rank"),
        ({"fp16": True, "bf16": True}, "fp16 and bf16"),
        ({"fp16_full_eval": True, "bf16_full_eval": True}, "fp16_full_eval and bf16_full_eval"),
        ({"report_to": ["none", "tensorboard"]}, "report_to"),
        ({"report_to": 3}, "report_to"),
        ({"label_names": [1, 2]}, "label_names"),
        ({"fsdp": "full_shard bogus"}, "fsdp"),
        ({"debug": "verbose"}, "debug"),
        ({"lr_scheduler_type": "reduce_lr_on_plateau"}, "reduce_lr_on_plateau"),
    ],
)
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_invalid_values_raise_value_error_naming_the_field(kwargs, field_name):
    with pytest.raises(ValueError, match=re.escape(field_name)):
        make(**kwargs)


def test_ratio_and_float_steps():
    args = make(logging_steps=0.1, save_steps=100.0)
    assert args.logging_steps == 0.1
    assert args.save_steps == 100 and isinstance(args.save_steps, int)
    assert make(logging_strategy="no", logging_steps=0).logging_steps == 0
    assert make(save_strategy="no", save_steps=0).save_steps == 0
    assert make(save_total_limit=0).save_total_limit == 0


def test_reduce_on_plateau_with_evaluation_is_fine():
    args = make(lr_scheduler_type="reduce_lr_on_plateau", evaluation_strategy="epoch")
    assert args.lr_scheduler_type is SchedulerType.REDUCE_ON_PLATEAU


def test_eval_steps_defaults_to_logging_steps():
    assert make(evaluation_strategy="steps", logging_steps=20).eval_steps == 20
    assert make(evaluation_strategy="epoch").eval_steps is None
    with pytest.raises(ValueError, match="eval_steps"):
        make(evaluation_strategy="steps", logging_strategy="no", logging_steps=0)


def test_do_eval_follows_evaluation_strategy():
    assert make().do_eval is False
    assert make(evaluation_strategy="epoch").do_eval is True


def test_load_best_model_requires_matching_strategies():
    with pytest.raises(
        ValueError, match="load_best_model_at_end.*evaluation_strategy='epoch'.*save_strategy='steps'"
    ):
        make(load_best_model_at_end=True, evaluation_strategy="epoch")
    args = make(load_best_model_at_end=True, evaluation_strategy="epoch", save_strategy="epoch")
    assert args.metric_for_best_model == "loss" and args.greater_is_better is False


@pytest.mark.parametrize(
    "save_steps, eval_steps, ok",
    [
        (100, 50, True),
        (100, 100, True),
        (150, 100, False),
        (50, 100, False),
        (0.2, 0.1, True),
        (0.3, 0.1, True),
        (0.15, 0.1, False),
        (0.05, 0.1, False),
        (100, 0.5, False),
    ],
)
def test_load_best_model_needs_save_multiple_of_eval(save_steps, eval_steps, ok):
    kwargs = dict(
        load_best_model_at_end=True, evaluation_strategy="steps", save_steps=save_steps, eval_steps=eval_steps
    )
    if ok:
        assert make(**kwargs).save_steps == save_steps
    else:
        with pytest.raises(ValueError, match="save_steps"):
            make(**kwargs)


def test_greater_is_better_default_follows_metric_name():
    assert make(metric_for_best_model="accuracy").greater_is_better is True
    assert make(metric_for_best_model="eval_loss").greater_is_better is False
    assert make(metric_for_best_model="loss", greater_is_better=True).greater_is_better is True
    assert make().greater_is_better is None and make().metric_for_best_model is None


def test_disable_tqdm_follows_toolkit_logger_level():
    logging.getLogger("toolkit").setLevel(logging.WARNING)
    assert make().disable_tqdm is False
    logging.getLogger("toolkit").setLevel(logging.ERROR)
    assert make().disable_tqdm is True
    assert make(disable_tqdm=False).disable_tqdm is False


@pytest.mark.parametrize(
    "value, expected",
    [
        (None, ["all"]),
        ("all", ["all"]),
        ("none", []),
        (["none"], []),
        ("tensorboard", ["tensorboard"]),
        (("csv", "jsonl"), ["csv", "jsonl"]),
    ],
)
def test_report_to_normalised_to_list(value, expected):
    assert make(report_to=value).report_to == expected


def test_logging_dir_and_run_name_defaults():
    args = TrainingArguments(os.path.join("some", "where"))
    prefix = os.path.join("some", "where", "runs") + os.sep
    assert args.logging_dir.startswith(prefix)
    assert re.fullmatch(r"[A-Z][a-z]{2}\d{2}_\d{2}-\d{2}-\d{2}_.+", args.logging_dir[len(prefix) :])
    assert args.run_name == os.path.join("some", "where")
    assert make(logging_dir="logs", run_name="r1").logging_dir == "logs"
    assert make(run_name="r1").run_name == "r1"


def test_label_names_become_a_list():
    assert make(label_names=("labels", "mask")).label_names == ["labels", "mask"]
    assert make(label_names="labels").label_names == ["labels"]


def test_optim_args_kept_verbatim():
    assert make(optim_args="betas=(0.9,0.95),foreach=False").optim_args == "betas=(0.9,0.95),foreach=False"


def test_deprecated_per_gpu_overrides_with_warning():
    with pytest.warns(FutureWarning, match="per_gpu_train_batch_size"):
        args = make(per_device_train_batch_size=4, per_gpu_train_batch_size=16)
    assert args.train_batch_size == 16
    assert make(per_device_eval_batch_size=3).eval_batch_size == 3


def test_no_cuda_sets_use_cpu_with_warning():
    with pytest.warns(FutureWarning, match="no_cuda"):
        args = make(no_cuda=True)
    assert args.use_cpu is True and args.device == torch.device("cpu") and args.n_gpu == 0


def test_other_deprecated_spellings_are_mapped():
    with pytest.warns(FutureWarning):
        args = make(adafactor=True, fp16_backend="cpu_amp", push_to_hub_token="secret")
    assert args.optim is OptimizerNames.ADAFACTOR
    assert args.half_precision_backend == "cpu_amp"
    assert args.hub_token == "secret"


# ----------------------------------------------------------------------------- pending features


PENDING_CASES = [
    ("sharded_ddp", "simple"),
    ("use_ipex", True),
]


def test_pending_feature_table_covers_the_planned_list():
    assert set(PENDING_FEATURES) == {name for name, _ in PENDING_CASES}


@pytest.mark.parametrize("name, value", PENDING_CASES)
def test_pending_features_raise_not_implemented(name, value):
    with pytest.raises(NotImplementedError) as info:
        make(**{name: value})
    assert str(info.value) == f"`{name}` ({PENDING_FEATURES[name]}) is not supported by toolkit yet"


@pytest.mark.parametrize(
    "kwargs, name, value",
    [
        ({"torch_compile_backend": "inductor"}, "torch_compile", True),
        ({"torch_compile_mode": "max-autotune"}, "torch_compile", True),
        ({"fp16_backend": "apex"}, "half_precision_backend", "apex"),
    ],
)
@pytest.mark.filterwarnings("ignore::FutureWarning")
def test_implemented_features_reached_indirectly(kwargs, name, value):
    # once pending, now implemented: the indirect spellings turn the feature on
    assert getattr(make(**kwargs), name) == value


@pytest.mark.parametrize(
    "name, value",
    [("jit_mode_eval", True), ("torch_compile", True), ("gradient_checkpointing", True), ("tpu_num_cores", 8)],
)
def test_precision_and_execution_features_are_accepted(name, value):
    assert name not in PENDING_FEATURES
    assert getattr(make(**{name: value}), name) == value


def test_pending_defaults_and_off_values_are_fine():
    args = make(fsdp="", fsdp_config=None, debug=[], half_precision_backend="cuda_amp", sharded_ddp=None)
    assert make(fsdp=False, fsdp_min_num_params=0, deepspeed=None).fsdp == []
    assert args.fsdp == [] and args.debug == [] and args.sharded_ddp == []
    assert args.half_precision_backend == "cuda_amp"


def test_pending_check_is_data_driven(monkeypatch):
    for name in ("fsdp", "torch_compile"):
        monkeypatch.delitem(PENDING_FEATURES, name, raising=False)
    args = make(fsdp="full_shard auto_wrap", debug="underflow_overflow", torch_compile_backend="inductor")
    assert args.fsdp == [FSDPOption.FULL_SHARD, FSDPOption.AUTO_WRAP]
    assert args.debug == [DebugOption.UNDERFLOW_OVERFLOW]
    assert args.torch_compile is True
    assert make(fsdp=True).fsdp == [FSDPOption.FULL_SHARD]
    assert make(debug=["underflow_overflow"]).to_dict()["debug"] == ["underflow_overflow"]


# ----------------------------------------------------------------------------- no side effects


def test_creation_has_no_side_effects(tmp_path):
    before = dict(os.environ)
    out = tmp_path / "never_created"
    args = TrainingArguments(
        str(out), evaluation_strategy="steps", fp16=True, local_rank=0, ddp_backend="gloo", report_to="all"
    )
    Seq2SeqTrainingArguments(str(out), predict_with_generate=True)
    _ = (args.device, args.world_size, args.should_save, args.to_json_string(), args.to_sanitized_dict())
    assert dict(os.environ) == before
    assert not out.exists() and not os.path.exists(args.logging_dir)
    assert list(tmp_path.iterdir()) == []
    assert not torch.distributed.is_initialized()
    assert not torch.cuda.is_initialized()


# ----------------------------------------------------------------------------- serialisation


def test_to_dict_masks_tokens_and_unwraps_enums():
    args = make(hub_token="hf_secret", evaluation_strategy="epoch", optim="sgd")
    d = args.to_dict()
    assert d["hub_token"] == "<HUB_TOKEN>"
    assert d["push_to_hub_token"] is None
    assert d["evaluation_strategy"] == "epoch" and type(d["evaluation_strategy"]) is str
    assert d["optim"] == "sgd" and d["loss_normalization"] == "items"
    assert set(d) == {f.name for f in dataclasses.fields(TrainingArguments)}
    assert args.hub_token == "hf_secret"  # the object itself keeps the value
    assert "hf_secret" not in repr(args) and "hf_secret" not in str(args)
    assert "hf_secret" not in args.to_json_string()


def test_deprecated_token_masked_too():
    with pytest.warns(FutureWarning):
        d = make(push_to_hub_token="abc").to_dict()
    assert d["push_to_hub_token"] == "<PUSH_TO_HUB_TOKEN>" and d["hub_token"] == "<HUB_TOKEN>"


def test_to_json_string_round_trip():
    args = make(
        evaluation_strategy="steps", eval_steps=10, report_to="none", label_names=["y"], logging_dir="lg"
    )
    loaded = json.loads(args.to_json_string())
    assert loaded == args.to_dict()
    again = TrainingArguments(**loaded)
    assert again.to_dict() == args.to_dict()
    assert again == args


def test_to_sanitized_dict_types():
    d = make(per_device_train_batch_size=4, per_device_eval_batch_size=2).to_sanitized_dict()
    assert d["train_batch_size"] == 4 and d["eval_batch_size"] == 2
    assert d["data_seed"] == "None" and d["report_to"] == "['all']"
    assert all(type(v) in (bool, int, float, str, torch.Tensor) for v in d.values())


# ----------------------------------------------------------------------------- set_* helpers


def test_set_helpers_documented_examples():
    assert make().set_training(learning_rate=1e-4, batch_size=32).learning_rate == 1e-4
    assert make().set_evaluate(strategy="steps", steps=100).eval_steps == 100
    assert make().set_testing(batch_size=32).per_device_eval_batch_size == 32
    assert make().set_save(strategy="steps", steps=100).save_steps == 100
    assert make().set_logging(strategy="steps", steps=100).logging_steps == 100
    assert make().set_optimizer(name="adamw_torch", beta1=0.8).optim == "adamw_torch"
    assert make().set_lr_scheduler(name="cosine", warmup_ratio=0.05).warmup_ratio == 0.05
    assert make().set_dataloader(train_batch_size=16, eval_batch_size=64).per_device_train_batch_size == 16


def test_set_helpers_set_every_documented_field():
    args = make()
    assert (
        args.set_training(weight_decay=0.1, num_epochs=2, max_steps=9, gradient_accumulation_steps=4, seed=3)
        is args
    )
    assert (args.do_train, args.weight_decay, args.num_train_epochs, args.max_steps) == (True, 0.1, 2, 9)
    assert (args.gradient_accumulation_steps, args.seed, args.per_device_train_batch_size) == (4, 3, 8)

    args.set_evaluate(strategy="epoch", batch_size=5, accumulation_steps=2, delay=1, loss_only=True)
    assert args.evaluation_strategy is IntervalStrategy.EPOCH and args.do_eval
    assert (args.per_device_eval_batch_size, args.eval_accumulation_steps, args.eval_delay) == (5, 2, 1)
    assert args.prediction_loss_only is True
    args.set_evaluate()
    assert args.do_eval is False and args.evaluation_strategy is IntervalStrategy.NO

    args.set_testing(batch_size=7, loss_only=True)
    assert args.do_predict and args.per_device_eval_batch_size == 7

    args.set_save(strategy="epoch", total_limit=2, on_each_node=True)
    assert (
        args.save_strategy is IntervalStrategy.EPOCH and args.save_total_limit == 2 and args.save_on_each_node
    )

    args.set_logging(
        report_to="tensorboard", level="info", first_step=True, nan_inf_filter=True, replica_level="error"
    )
    assert (
        args.report_to == ["tensorboard"] and args.log_level == "info" and args.log_level_replica == "error"
    )
    assert args.logging_first_step and args.logging_nan_inf_filter and args.log_on_each_node is False
    assert make().set_logging().report_to == []

    args.set_optimizer(
        name="sgd", learning_rate=0.5, weight_decay=0.01, beta2=0.9, epsilon=1e-6, args="momentum=0.9"
    )
    assert (
        args.optim is OptimizerNames.SGD and args.learning_rate == 0.5 and args.optim_args == "momentum=0.9"
    )
    assert (args.weight_decay, args.adam_beta2, args.adam_epsilon) == (0.01, 0.9, 1e-6)

    args.set_lr_scheduler(name="constant_with_warmup", num_epochs=1.5, max_steps=20, warmup_steps=4)
    assert args.lr_scheduler_type is SchedulerType.CONSTANT_WITH_WARMUP
    assert (args.num_train_epochs, args.max_steps, args.warmup_steps) == (1.5, 20, 4)

    args.set_dataloader(
        drop_last=True, num_workers=2, pin_memory=False, ignore_data_skip=True, sampler_seed=11
    )
    assert args.dataloader_drop_last and args.dataloader_num_workers == 2 and not args.dataloader_pin_memory
    assert args.ignore_data_skip and args.data_seed == 11


def test_set_helpers_validate_and_leave_object_unchanged_on_error():
    args = make(load_best_model_at_end=True, evaluation_strategy="steps", eval_steps=100, save_steps=200)
    before = args.to_dict()
    with pytest.raises(ValueError, match="save_steps"):
        args.set_save(steps=150)
    with pytest.raises(ValueError, match="lr_scheduler_type='nope'"):
        args.set_lr_scheduler(name="nope")
    with pytest.raises(ValueError, match="per_device_train_batch_size"):
        args.set_dataloader(train_batch_size=0)
    assert args.to_dict() == before
    assert args.hub_token is None and args.push_to_hub is False
    assert args.set_training(gradient_checkpointing=True).gradient_checkpointing is True


def test_set_helpers_do_not_repeat_deprecation_warnings(recwarn):
    with pytest.warns(FutureWarning):
        args = make(no_cuda=True)
    recwarn.clear()
    args.set_save(steps=10)
    assert not [w for w in recwarn if issubclass(w.category, FutureWarning)]
    assert not hasattr(args, "_revalidating")


# ----------------------------------------------------------------------------- methods and properties


def test_get_warmup_steps():
    assert make(warmup_steps=7, warmup_ratio=0.5).get_warmup_steps(1000) == 7
    assert make(warmup_ratio=0.05).get_warmup_steps(1000) == 50
    assert make(warmup_ratio=0.015).get_warmup_steps(100) == 2  # ceil(1.5)
    assert make().get_warmup_steps(1000) == 0


def test_get_process_log_level_main_process():
    assert make(log_level="info").get_process_log_level() == logging.INFO
    logging.getLogger("toolkit").setLevel(logging.ERROR)
    assert make().get_process_log_level() == logging.ERROR  # passive: keep the current level
    logging.getLogger("toolkit").setLevel(logging.DEBUG)
    assert make().get_process_log_level() == logging.DEBUG


def test_get_process_log_level_replica(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    assert make(log_level="debug").get_process_log_level() == logging.WARNING
    assert make(log_level_replica="error").get_process_log_level() == logging.ERROR
    logging.getLogger("toolkit").setLevel(logging.DEBUG)
    assert make(log_level_replica="passive").get_process_log_level() == logging.WARNING


def test_single_process_properties():
    args = make(use_cpu=True, ddp_timeout=60)
    assert (args.world_size, args.process_index, args.local_process_index) == (1, 0, 0)
    assert args.parallel_mode == "not_parallel"
    assert args.should_log and args.should_save and args.place_model_on_device
    assert args.device == torch.device("cpu") and args.n_gpu == 0
    assert args.ddp_timeout_delta == timedelta(seconds=60)
    assert args.distributed_env == DistributedEnv()


def test_distributed_properties_follow_environment(monkeypatch):
    for k, v in {
        "RANK": "5",
        "WORLD_SIZE": "8",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "4",
        "GROUP_RANK": "1",
    }.items():
        monkeypatch.setenv(k, v)
    args = make()
    assert (args.world_size, args.process_index, args.local_process_index) == (8, 5, 1)
    assert args.parallel_mode == "distributed"
    assert not args.should_log and not args.should_save
    monkeypatch.setenv("LOCAL_RANK", "0")
    monkeypatch.setenv("RANK", "4")
    assert make().should_log  # first process of its node, log_on_each_node=True
    assert not make().should_save  # not global rank 0
    assert make(save_on_each_node=True).should_save
    assert not make(log_on_each_node=False).should_log


def test_local_rank_field_overrides_environment(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert make(local_rank=0).local_process_index == 0
    assert make().local_process_index == 1
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    monkeypatch.delenv("LOCAL_RANK")
    assert make(local_rank=3).local_process_index == 3


def test_device_without_accelerator(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    args = make()
    assert args.device == torch.device("cpu") and args.n_gpu == 0


def test_device_picks_cuda_by_local_rank(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setenv("RANK", "6")
    monkeypatch.setenv("WORLD_SIZE", "8")
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    args = make()
    assert args.device == torch.device("cuda", 2) and args.n_gpu == 1
    assert make(use_cpu=True).device == torch.device("cpu")


def test_device_uses_mps_when_available_and_no_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert make().device == torch.device("mps")


def test_main_process_first_is_a_noop_without_process_group():
    ran = []
    with make().main_process_first(local=False, desc="tokenise"):
        ran.append(1)
    assert ran == [1]


# ----------------------------------------------------------------------------- Seq2Seq


class _FakeGenerationConfig:
    def __init__(self, **values):
        self.values = values

    def to_dict(self):
        return dict(self.values)


def test_seq2seq_to_dict_turns_generation_config_into_dict():
    args = Seq2SeqTrainingArguments("o", generation_config=_FakeGenerationConfig(num_beams=3))
    d = args.to_dict()
    assert d["generation_config"] == {"num_beams": 3}
    assert json.loads(args.to_json_string())["generation_config"] == {"num_beams": 3}
    assert (
        Seq2SeqTrainingArguments("o", generation_config="t5-small").to_dict()["generation_config"]
        == "t5-small"
    )
    assert Seq2SeqTrainingArguments("o", generation_config=Path("g")).to_dict()["generation_config"] == "g"


def test_seq2seq_validates_generation_options_and_masks_repr():
    with pytest.raises(ValueError, match="generation_num_beams"):
        Seq2SeqTrainingArguments("o", generation_num_beams=0)
    with pytest.raises(ValueError, match="generation_max_length"):
        Seq2SeqTrainingArguments("o", generation_max_length=-1)
    args = Seq2SeqTrainingArguments("o", hub_token="secret_tok")
    assert "secret_tok" not in repr(args)
    assert args.set_evaluate(strategy="epoch").do_eval


# ----------------------------------------------------------------------------- distributed environment


def test_env_default_is_single_process():
    assert detect_distributed_env({}) == DistributedEnv(0, 1, 0, 1, 0)
    assert detect_distributed_env() == DistributedEnv()


def test_env_torchrun_like():
    env = {"RANK": "6", "WORLD_SIZE": "8", "LOCAL_RANK": "2", "LOCAL_WORLD_SIZE": "4", "GROUP_RANK": "1"}
    got = detect_distributed_env(env)
    assert got == DistributedEnv(rank=6, world_size=8, local_rank=2, local_world_size=4, node_rank=1)
    assert got.is_distributed and not got.is_global_zero and not got.is_local_zero


def test_env_derives_missing_pieces_and_reads_deepspeed_names():
    assert detect_distributed_env({"RANK": "3", "WORLD_SIZE": "4"}) == DistributedEnv(3, 4, 3, 4, 0)
    ds = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_SIZE": "4", "CROSS_RANK": "1"}
    assert detect_distributed_env(ds) == DistributedEnv(5, 8, 1, 4, 1)
    no_node = {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4"}
    assert detect_distributed_env(no_node).node_rank == 1


def test_env_slurm_like():
    env = {
        "SLURM_NTASKS": "8",
        "SLURM_PROCID": "5",
        "SLURM_LOCALID": "1",
        "SLURM_NODEID": "1",
        "SLURM_TASKS_PER_NODE": "4(x2)",
    }
    assert detect_distributed_env(env) == DistributedEnv(5, 8, 1, 4, 1)
    env["SLURM_NTASKS_PER_NODE"] = "4"
    assert detect_distributed_env(env).local_world_size == 4


def test_env_torchrun_variables_win_over_slurm():
    env = {
        "RANK": "1",
        "WORLD_SIZE": "2",
        "LOCAL_RANK": "1",
        "LOCAL_WORLD_SIZE": "2",
        "GROUP_RANK": "0",
        "SLURM_NTASKS": "16",
        "SLURM_PROCID": "9",
    }
    assert detect_distributed_env(env) == DistributedEnv(1, 2, 1, 2, 0)
    assert detect_distributed_env({"SLURM_PROCID": "3"}) == DistributedEnv()  # no SLURM_NTASKS


def test_env_reads_os_environ_by_default_and_never_writes(monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "3")
    before = dict(os.environ)
    assert detect_distributed_env().rank == 1
    assert dict(os.environ) == before


def test_env_bad_values_are_clear_errors():
    with pytest.raises(ValueError, match="RANK='zero'"):
        detect_distributed_env({"RANK": "zero", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="rank must be in"):
        detect_distributed_env({"RANK": "4", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="local_rank"):
        DistributedEnv(rank=0, world_size=2, local_rank=2, local_world_size=2)
    with pytest.raises(ValueError, match="world_size"):
        DistributedEnv(world_size=0)


# ----------------------------------------------------------------------------- docs


def test_arguments_doc_lists_exactly_the_pending_features():
    text = (REPO / "docs" / "arguments.md").read_text(encoding="utf-8")
    section = text.split("## Not supported yet", 1)[1].split("\n## ", 1)[0]
    listed = set(re.findall(r"`([a-z_]+)`", section)) - {"field", "description"}
    assert listed == set(PENDING_FEATURES)
