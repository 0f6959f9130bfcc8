"""FSDPStrategy (FSDP2 ``fully_shard``): the option mapping (fast, one process) and the
Trainer under ``torchrun`` with 2 gloo processes on the CPU (slow; one launch runs every
multi-process check of `driver_fsdp.py`, the single-process references run here)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch
from torch import nn

from toolkit import Trainer, TrainingArguments
from toolkit.connector import strategy_from_args
from toolkit.strategies.fsdp import FSDPPlan, FSDPStrategy, fsdp_plan, load_fsdp_config, modules_to_wrap
from toolkit.strategies.registry import get_strategy_class
from toolkit.types import FSDPOption

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("_launch", HERE / "_launch.py")
launcher = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launcher)
toys = launcher.load_toys()
slow = [pytest.mark.distributed, pytest.mark.slow]


# ----------------------------------------------------------------------------- option mapping (fast)


def test_sharding_modes_map_to_reshard_after_forward():
    assert fsdp_plan("full_shard").reshard_after_forward is True
    assert fsdp_plan([FSDPOption.SHARD_GRAD_OP]).reshard_after_forward is False
    plan = fsdp_plan("no_shard")
    assert plan.replicate and any("DistributedDataParallel" in n for n in plan.notes)
    assert fsdp_plan("full_shard offload").offload and not fsdp_plan("full_shard").offload
    assert fsdp_plan([]) == FSDPPlan()  # nothing given: full sharding of the root


@pytest.mark.parametrize("options, config, match", [
    ("hybrid_shard", {}, "hybrid"),
    ("full_shard shard_grad_op", {}, "one sharding mode"),
    ("full_shard", {"xla": True}, "XLA"),
    ("full_shard", {"backward_prefetch": "sideways"}, "backward_prefetch"),
    ("full_shard", {"min_num_params": 5, "transformer_layer_cls_to_wrap": "Block"}, "either"),
])
def test_invalid_options_are_rejected(options, config, match):
    with pytest.raises(ValueError, match=match):
        fsdp_plan(options, config)


def test_config_keys_legacy_arguments_and_no_effect_notes(tmp_path):
    path = tmp_path / "fsdp.json"
    path.write_text(json.dumps({"fsdp_transformer_layer_cls_to_wrap": ["Block"], "fsdp_forward_prefetch": "true",
                                "backward_prefetch": "BACKWARD_POST", "limit_all_gathers": True,
                                "cpu_ram_efficient_loading": "true", "activation_checkpointing": True,
                                "mystery": 1}))
    config = load_fsdp_config(str(path))
    plan = fsdp_plan("full_shard auto_wrap", config)
    assert plan.auto_wrap and plan.layer_cls_to_wrap == ("Block",) and plan.forward_prefetch
    assert plan.sync_module_states and plan.activation_checkpointing and plan.backward_prefetch == "backward_post"
    notes = " ".join(plan.notes)
    assert "backward_post" in notes and "limit_all_gathers" in notes and "mystery" in notes
    assert fsdp_plan("full_shard", {"backward_prefetch": "backward_pre"}).notes == ()
    # legacy arguments, overridden by the config
    legacy = fsdp_plan("full_shard", {}, min_num_params=100, transformer_layer_cls_to_wrap=None)
    assert legacy.auto_wrap and legacy.min_num_params == 100
    assert fsdp_plan("full_shard", {"transformer_layer_cls_to_wrap": "A, B"},
                     transformer_layer_cls_to_wrap="C").layer_cls_to_wrap == ("A", "B")


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(width, width), nn.Linear(width, width)


class Net(nn.Module):
    _no_split_modules = ["Block"]

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.blocks = nn.ModuleList([Block(8), Block(8)])
        self.head = nn.Linear(8, 2)


def test_modules_to_wrap_by_class_by_size_and_no_split_modules():
    net = Net()
    by_class = modules_to_wrap(net, fsdp_plan("full_shard", {"transformer_layer_cls_to_wrap": "Block"}))
    assert by_class == list(net.blocks)
    assert modules_to_wrap(net, fsdp_plan("full_shard auto_wrap")) == list(net.blocks)  # _no_split_modules
    assert modules_to_wrap(net, fsdp_plan("full_shard")) == []  # no auto_wrap: the root only
    by_size = modules_to_wrap(net, fsdp_plan("full_shard", {"min_num_params": 100}))
    # the embedding (400) and each block (2 x 72 = 144) reach 100; a single Linear (72) or the head (18) do not
    assert by_size == [net.emb, net.blocks[0], net.blocks[1]]
    with pytest.raises(ValueError, match="Missing"):
        modules_to_wrap(net, fsdp_plan("full_shard", {"transformer_layer_cls_to_wrap": "Missing"}))


def test_fsdp_arguments_select_the_fsdp_strategy(tmp_path, monkeypatch):
    for name, value in {"RANK": "0", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "2"}.items():
        monkeypatch.setenv(name, value)
    assert get_strategy_class("fsdp") is FSDPStrategy
    args = TrainingArguments(str(tmp_path), fsdp="shard_grad_op offload", use_cpu=True, report_to="none",
                             fsdp_config={"fsdp_min_num_params": 10})
    strategy = strategy_from_args(args)
    assert isinstance(strategy, FSDPStrategy) and strategy.device == torch.device("cpu")
    assert strategy.plan.reshard_after_forward is False and strategy.plan.offload
    assert strategy.plan.min_num_params == 10
    fp16 = TrainingArguments(str(tmp_path), fsdp="full_shard", fp16=True, use_cpu=True, report_to="none")
    scaler = strategy_from_args(fp16).precision.scaler
    assert type(scaler).__name__ == "ShardedGradScaler"


# ----------------------------------------------------------------------------- 2 processes (slow)


@pytest.fixture(scope="module")
def fsdp_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("fsdp_trainer")
    return launcher.launch(launcher.torchrun(), "driver_fsdp.py", str(out), timeout=240), out


def _single(tmp_path: Path, **kw) -> TrainingArguments:
    return TrainingArguments(str(tmp_path), **{**toys.COMMON, **kw})


@pytest.mark.distributed
@pytest.mark.slow
def test_fsdp_training_equals_single_process(fsdp_run, tmp_path) -> None:
    result, _ = fsdp_run
    assert (result["strategy"], result["world_size"], result["dtensor"]) == ("FSDPStrategy", 2, "DTensor")
    ref = toys.trained_reference(
        toys.Regression, toys.regression_data(), tmp_path / "reg",
        per_device_train_batch_size=6, num_train_epochs=2, optim="sgd", learning_rate=0.1,
        logging_steps=2, save_strategy="no",
    )
    toys.assert_weights_close(result["reg_weights"], toys.weights(ref.model), 1e-5)
    data = toys.regression_data()[:6]
    ref.model(**{k: torch.stack([d[k] for d in data]) for k in data[0]})["loss"].backward()
    ref_norm = torch.nn.utils.clip_grad_norm_(ref.model.parameters(), 1e9)
    assert result["grad_norm"][0] == "Tensor" and result["grad_norm"][1] == pytest.approx(float(ref_norm), rel=1e-5)
    assert result["reg_losses"] == pytest.approx(toys.logged_losses(ref), abs=1e-3)
    # layer-class wrapping, shard_grad_op, accumulation without sync, activation checkpointing
    ref = toys.trained_reference(
        toys.TokenModel, toys.padded_token_data(), tmp_path / "tok",
        per_device_train_batch_size=4, gradient_accumulation_steps=2, num_train_epochs=2,
        optim="sgd", learning_rate=0.5, logging_steps=1, save_strategy="no",
    )
    toys.assert_weights_close(result["tok_weights"], toys.weights(ref.model), 1e-5)
    assert result["tok_losses"] == pytest.approx(toys.logged_losses(ref), abs=1e-3)


@pytest.mark.distributed
@pytest.mark.slow
def test_fsdp_checkpoint_resumes_at_two_ranks_and_at_one(fsdp_run, tmp_path) -> None:
    result, out = fsdp_run
    assert {"model.safetensors", "optimizer.pt", "rng_state_0.pth", "rng_state_1.pth"} <= set(result["ckpt_files"])
    assert (out / "ckpt" / "model.safetensors").exists()  # save_model: full weights gathered to rank 0
    toys.assert_weights_close(result["resumed_weights"], result["ckpt_weights"], 1e-7)
    # the 2-rank FSDP checkpoint resumed by one plain process (per-device batch doubled)
    single = Trainer(
        toys.seeded(toys.Regression),
        _single(tmp_path / "resume", per_device_train_batch_size=6, max_steps=6, learning_rate=0.01,
                logging_steps=3, save_strategy="no"),
        train_dataset=toys.regression_data(),
    )
    single.train(resume_from_checkpoint=str(out / "ckpt" / "checkpoint-3"))
    toys.assert_weights_close(toys.weights(single.model), result["ckpt_weights"], 1e-5)
    # ... and by one FSDP process started without a launcher (private rendezvous)
    one = launcher.launch(launcher.python(), "driver_fsdp_single.py", str(tmp_path / "one"),
                          str(out / "ckpt" / "checkpoint-3"))
    assert (one["strategy"], one["world_size"]) == ("FSDPStrategy", 1)
    toys.assert_weights_close(one["weights"], result["ckpt_weights"], 1e-5)


@pytest.mark.distributed
@pytest.mark.slow
def test_fsdp_bf16_mixed_precision_and_cpu_offload_run(fsdp_run) -> None:
    result, _ = fsdp_run
    assert result["bf16_loss_finite"] and result["bf16_steps"] == 4
    assert result["offload_loss_finite"] and result["offload_steps"] == 4


def test_fsdp_and_deepspeed_together_are_rejected(tmp_path):
    args = TrainingArguments(str(tmp_path), fsdp="full_shard", use_cpu=True, report_to="none")
    args.deepspeed = {"zero_optimization": {"stage": 2}}  # set after validation: only the connector decides
    with pytest.raises(ValueError, match="choose one"):
        strategy_from_args(args)
