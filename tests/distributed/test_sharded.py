"""FSDP sharded (DCP) checkpoints, ``main_process_first`` before any Trainer, and the
preemption stop agreed across processes.

Fast checks run in this process; one ``torchrun`` launch of 2 gloo processes
(`driver_sharded.py multi`) runs every multi-process check. The one-process FSDP runs
(saving the checkpoint the 2 processes resume, and resuming theirs) run here with a
private one-process group, torn down after each.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from toolkit import Trainer, TrainingArguments
from toolkit.connector import strategy_from_args
from toolkit.run_checkpoint import PreemptionAgreement
from toolkit.strategies.fsdp import fsdp_plan, is_sharded_checkpoint

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("_launch", HERE / "_launch.py")
launcher = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launcher)
toys = launcher.load_toys()

SHARDED = {"fsdp": "full_shard", "fsdp_config": {"state_dict_type": "SHARDED_STATE_DICT"}}


# ----------------------------------------------------------------------------- fast


def test_state_dict_type_is_read_the_accelerate_way(tmp_path, monkeypatch):
    assert fsdp_plan("full_shard").state_dict_type == "FULL_STATE_DICT"
    assert (
        fsdp_plan("full_shard", {"state_dict_type": "sharded_state_dict"}).state_dict_type
        == "SHARDED_STATE_DICT"
    )
    plan = fsdp_plan(
        "full_shard", {"state_dict_type": "SHARDED", "final_state_dict_type": "SHARDED_STATE_DICT"}
    )
    assert (plan.state_dict_type, plan.final_state_dict_type) == ("SHARDED_STATE_DICT", "SHARDED_STATE_DICT")
    with pytest.raises(ValueError, match="state_dict_type='LOCAL_STATE_DICT'.*accepted: FULL_STATE_DICT"):
        fsdp_plan("full_shard", {"state_dict_type": "LOCAL_STATE_DICT"})
    replicated = fsdp_plan("no_shard", {"state_dict_type": "SHARDED_STATE_DICT"})
    assert replicated.state_dict_type == "FULL_STATE_DICT" and any(
        "full state dicts" in n for n in replicated.notes
    )
    # `accelerate launch --fsdp_state_dict_type` exports FSDP_STATE_DICT_TYPE; fsdp_config wins over it
    for name in launcher.LAUNCH_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("FSDP_STATE_DICT_TYPE", "SHARDED_STATE_DICT")
    args = TrainingArguments(str(tmp_path), fsdp="full_shard", use_cpu=True, report_to="none")
    assert strategy_from_args(args).sharded_checkpoint
    args = TrainingArguments(
        str(tmp_path),
        fsdp="full_shard",
        use_cpu=True,
        report_to="none",
        fsdp_config={"fsdp_state_dict_type": "FULL_STATE_DICT"},
    )
    assert not strategy_from_args(args).sharded_checkpoint


class _CountingStrategy:
    """Records the all-reduces; another process was signalled when ``others`` is 1."""

    def __init__(self, others: float = 0.0) -> None:
        self.others, self.calls = others, 0

    def reduce(self, tensor, op):
        self.calls += 1
        return tensor + self.others


class _Loop:
    def __init__(self) -> None:
        self.stopped = False

    def request_stop(self, save=True):
        self.stopped = save


class _Flags:
    def __init__(self) -> None:
        self.preempted = False


def test_preemption_agreement_runs_a_collective_only_at_due_steps():
    from toolkit.state import TrainerControl, TrainerState

    strategy, loop, ckpt = _CountingStrategy(), _Loop(), _Flags()
    agreement = PreemptionAgreement(strategy, loop, ckpt, every=4)
    state, control = TrainerState(max_steps=10), TrainerControl()
    for step in range(1, 11):
        state.global_step = step
        control.should_save = step == 5
        agreement.on_step_end(None, state, control)
    assert strategy.calls == 4  # steps 4, 5 (a save), 8 and 10 (the last)
    assert not loop.stopped and not ckpt.preempted
    # another process was signalled: this one stops (and saves) at the next due step
    strategy = _CountingStrategy(others=1.0)
    agreement = PreemptionAgreement(strategy, loop, ckpt, every=4)
    state.global_step = 3
    agreement.on_step_end(None, state, TrainerControl())
    assert strategy.calls == 0 and not loop.stopped
    state.global_step = 4
    agreement.on_step_end(None, state, TrainerControl())
    assert loop.stopped and ckpt.preempted
    with pytest.raises(ValueError, match="preemption_sync_steps=0"):
        PreemptionAgreement(strategy, loop, ckpt, every=0)


# ----------------------------------------------------------------------------- 2 processes (slow)


def _args(out: Path, world: int, **kw) -> TrainingArguments:
    return TrainingArguments(
        str(out),
        **{
            **toys.COMMON,
            "per_device_train_batch_size": 6 // world,
            "max_steps": 6,
            "learning_rate": 0.01,
            "logging_steps": 3,
            "save_strategy": "steps",
            "save_steps": 3,
            **kw,
        },
    )


def _one_fsdp_process(out: Path, resume: str | None = None, **kw) -> dict:
    """One FSDP process here (a private one-process group, torn down at the end)."""
    trainer = Trainer(
        toys.seeded(toys.Regression), _args(out, 1, **SHARDED, **kw), train_dataset=toys.regression_data()
    )
    try:
        assert trainer.strategy.world_size == 1 and trainer.strategy.sharded_checkpoint
        trainer.train(resume_from_checkpoint=resume)
        state = trainer.strategy.model_state_dict(trainer.model_wrapped)
        return {k: v.detach().double().reshape(-1).tolist() for k, v in state.items()}
    finally:
        trainer.strategy.teardown()


@pytest.fixture(scope="module")
def sharded_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path, dict]:
    command = launcher.torchrun()
    out = tmp_path_factory.mktemp("sharded")
    saved = os.environ.copy()
    for name in launcher.LAUNCH_ENV_VARS:
        os.environ.pop(name, None)
    try:
        one = _one_fsdp_process(out / "one")  # its checkpoint-3 is resumed by 2 processes
    finally:
        os.environ.clear()
        os.environ.update(saved)
    result = launcher.launch(
        command, "driver_sharded.py", "multi", str(out), str(out / "one" / "checkpoint-3"), timeout=240
    )
    return result, out, one


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """One plain process, the whole global batch (6) per step."""
    trainer = Trainer(
        toys.seeded(toys.Regression),
        _args(tmp_path_factory.mktemp("ref"), 1, save_strategy="no"),
        train_dataset=toys.regression_data(),
    )
    trainer.train()
    return toys.weights(trainer.model)


@pytest.mark.distributed
@pytest.mark.slow
def test_sharded_checkpoints_resume_exactly_and_across_world_sizes(
    sharded_run, reference, tmp_path, monkeypatch
):
    result, out, one = sharded_run
    toys.assert_weights_close(one, reference, 1e-5)  # one FSDP process == one plain process
    toys.assert_weights_close(result["two_weights"], reference, 1e-5)
    # per-process shards, nothing gathered: no full weights, no optimizer.pt in the checkpoint
    files = set(result["ckpt_files"])
    assert {"pytorch_model_fsdp_0", "optimizer_0", "rng_state_0.pth", "rng_state_1.pth"} <= files
    assert not files & {"model.safetensors", "optimizer.pt"}
    assert result["model_shards"] == result["optim_shards"] == [".metadata", "__0_0.distcp", "__1_0.distcp"]
    # resume at the same world size is exact (model, AdamW moments, scheduler, RNG, data position)
    assert result["resumed_weights"] == result["two_weights"]
    # 1 -> 2: the checkpoint of one process resumed by two
    toys.assert_weights_close(result["from_one_weights"], reference, 1e-5)
    # 2 -> 1: by one FSDP process, and by one plain process (DCP without a process group)
    for name in launcher.LAUNCH_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    checkpoint = str(out / "two" / "checkpoint-3")
    assert is_sharded_checkpoint(checkpoint)
    toys.assert_weights_close(_one_fsdp_process(tmp_path / "fsdp1", resume=checkpoint, save_strategy="no"), reference, 1e-5)
    plain = Trainer(
        toys.seeded(toys.Regression),
        _args(tmp_path / "plain", 1, save_strategy="no"),
        train_dataset=toys.regression_data(),
    )
    plain.train(resume_from_checkpoint=checkpoint)
    toys.assert_weights_close(toys.weights(plain.model), reference, 1e-5)


@pytest.mark.distributed
@pytest.mark.slow
def test_save_model_gathers_full_weights_by_default(sharded_run):
    result, out, _ = sharded_run
    assert "model.safetensors" in result["saved_model_files"]
    saved = {
        k: v.double().reshape(-1).tolist() for k, v in load_file(out / "two" / "model.safetensors").items()
    }
    toys.assert_weights_close(saved, result["two_weights"], 0.0)


@pytest.mark.distributed
@pytest.mark.slow
def test_main_process_first_orders_ranks_before_any_trainer(sharded_run):
    result, _, _ = sharded_run
    ranks = [r["mpf"] for r in result["per_rank"]]
    assert [r["group_before"] for r in ranks] == [False, False]  # nothing started before the block
    assert [r["group_after"] for r in ranks] == [True, True]
    assert [r["saw_marker"] for r in ranks] == [False, True]  # rank 1 entered after rank 0 had finished
    assert result["reuses_group"]  # the Trainer's strategy uses that group


@pytest.mark.distributed
@pytest.mark.slow
def test_preemption_of_one_rank_stops_and_saves_every_rank_at_the_same_step(sharded_run):
    result, out, _ = sharded_run
    runs = [r["preempt"] for r in result["per_rank"]]
    # only rank 1 got SIGTERM (after step 3); both agreed at step 4 (sync every 4 steps), saved, exit 143
    assert [(r["code"], r["step"]) for r in runs] == [(143, 4), (143, 4)]
    assert result["preempt_files"] == ["checkpoint-4"]
    assert is_sharded_checkpoint(out / "preempt" / "checkpoint-4")
    print(
        "agreement all-reduce (us, per rank):",
        [round(r["agree_us"]) for r in runs],
        "step (s):",
        [round(r["seconds_per_step"], 4) for r in runs],
    )


@pytest.mark.slow
def test_final_state_dict_type_sharded_makes_save_model_write_shards(tmp_path, monkeypatch):
    from toolkit.strategies.fsdp import load_sharded_checkpoint

    for name in launcher.LAUNCH_ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    config = {"state_dict_type": "SHARDED_STATE_DICT", "final_state_dict_type": "SHARDED_STATE_DICT"}
    trainer = Trainer(
        toys.seeded(toys.Regression),
        _args(tmp_path, 1, fsdp="full_shard", fsdp_config=config, max_steps=2, save_strategy="no"),
        train_dataset=toys.regression_data(),
    )
    try:
        trainer.train()
        trainer.save_model(str(tmp_path / "final"))
        trained = {
            k: v.detach().clone() for k, v in trainer.strategy.model_state_dict(trainer.model_wrapped).items()
        }
    finally:
        trainer.strategy.teardown()
    names = set(os.listdir(tmp_path / "final"))
    assert (
        "pytorch_model_fsdp_0" in names and "model.safetensors" not in names and "training_args.json" in names
    )
    plain = toys.seeded(toys.Regression)
    load_sharded_checkpoint(tmp_path / "final", plain)  # one plain process, no process group
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(value, trained[key], rtol=0, atol=0)
