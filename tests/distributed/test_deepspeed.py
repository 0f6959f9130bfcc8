"""DeepSpeed ZeRO 2 and 3 on CPU (gloo), 2 real processes under ``torchrun``.

One launch runs `driver_deepspeed.py`, which trains with `DeepSpeedStrategy` in a
hand-written loop for both stages, saves and resumes a DeepSpeed checkpoint and exports
the full weights; the single-process reference (same global batch) is computed here.
DeepSpeed's own compiled ops are not used (torch optimizers), so no long compile runs;
``TORCH_EXTENSIONS_DIR`` is cached under ``~/.cache``.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("_launch", HERE / "_launch.py")
launcher = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launcher)
toys = launcher.load_toys()


def _launch(driver: str, out: Path) -> dict:
    """``torchrun`` with 2 processes, DeepSpeed on the CPU without compiled ops."""
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed (pip install 'toolkit[deepspeed]')")
    defaults = {
        "DS_ACCELERATOR": "cuda" if torch.cuda.is_available() else "cpu",
        "DS_BUILD_OPS": "0",
        "TORCH_EXTENSIONS_DIR": str(Path.home() / ".cache" / "toolkit-torch-extensions"),
    }
    env = launcher.clean_env({k: os.environ.get(k, v) for k, v in defaults.items()})
    return launcher.launch(launcher.torchrun(2), driver, str(out), env=env, timeout=600)


@pytest.fixture(scope="module")
def ds_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("deepspeed")
    return _launch("driver_deepspeed.py", out), out


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _launch("driver_deepspeed_trainer.py", tmp_path_factory.mktemp("deepspeed_trainer"))


def _reference() -> tuple[list[float], list[float], float]:
    """One process, the whole global batch (2 ranks x 3 samples x 2 accumulation = 12) per step."""
    model = toys.seeded(toys.Regression)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    data = toys.regression_data()
    snapshots = []
    for _epoch in range(2):
        for start in range(0, len(data), 12):
            chunk = data[start:start + 12]
            batch = {k: torch.stack([d[k] for d in chunk]) for k in chunk[0]}
            model(**batch)["loss"].backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad()
        state = model.state_dict()
        snapshots.append(torch.cat([state[k].reshape(-1) for k in sorted(state)]).tolist())
    return snapshots[0], snapshots[1], scheduler.get_last_lr()[0]


@pytest.mark.parametrize("stage", [2, 3])
def test_zero_training_equals_single_process_on_the_same_global_batch(ds_run, stage: int) -> None:
    result = ds_run[0][f"zero{stage}"]
    assert result["stage"] == stage and result["world_size"] == 2
    after_one, final, lr = _reference()
    np.testing.assert_allclose(result["after_one_epoch"], after_one, atol=1e-5, rtol=0)
    np.testing.assert_allclose(result["final"], final, atol=1e-5, rtol=0)
    assert result["global_steps"] == 4  # the engine stepped once per accumulation window
    assert result["lr"] == pytest.approx(lr)  # the engine stepped the torch scheduler, once per step


@pytest.mark.parametrize("stage", [2, 3])
def test_auto_values_are_filled_from_the_arguments(ds_run, stage: int) -> None:
    config = ds_run[0][f"zero{stage}"]["config"]
    assert config["train_micro_batch_size_per_gpu"] == 3
    assert config["gradient_accumulation_steps"] == 2
    assert config["train_batch_size"] == 12
    assert config["gradient_clipping"] == 1.0
    assert "reduce_bucket_size" not in config["zero_optimization"]  # "auto" without a hidden size


@pytest.mark.parametrize("stage", [2, 3])
def test_checkpoint_resume_is_exact_and_full_weights_are_exported(ds_run, stage: int) -> None:
    result, out = ds_run
    result = result[f"zero{stage}"]
    assert {"deepspeed", "latest", "zero_to_fp32.py"} <= set(result["checkpoint_files"])
    assert result["loaded"] == result["after_one_epoch"]
    np.testing.assert_allclose(result["resumed_final"], result["final"], atol=1e-7, rtol=0)
    assert result["resumed_lr"] == pytest.approx(result["lr"])
    assert result["exported"] == result["final"]
    from safetensors.torch import load_file

    exported = load_file(str(out / f"zero{stage}_model.safetensors"))
    reference = toys.seeded(toys.Regression)
    reference.load_state_dict(exported)  # full, loadable weights with the module's own names

    # DeepSpeed's zero_to_fp32 gives the same weights from the checkpoint folder itself
    os.environ.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

    state = get_fp32_state_dict_from_zero_checkpoint(str(out / f"zero{stage}"), tag="deepspeed")
    flat = torch.cat([state[k].reshape(-1) for k in sorted(state)]).tolist()
    np.testing.assert_allclose(flat, result["after_one_epoch"], atol=1e-7, rtol=0)


@pytest.mark.parametrize("stage", [2, 3])
def test_trainer_with_a_deepspeed_config_matches_single_process_and_resumes(trainer_run, tmp_path, stage: int) -> None:
    from toolkit import Trainer, TrainingArguments

    result = trainer_run[f"zero{stage}"]
    assert (result["strategy"], result["stage"], result["global_step"]) == ("DeepSpeedStrategy", stage, 4)
    common = {k: v for k, v in toys.COMMON.items() if k != "ddp_find_unused_parameters"}
    ref = Trainer(
        toys.seeded(toys.Regression),
        TrainingArguments(str(tmp_path), per_device_train_batch_size=6, gradient_accumulation_steps=2,
                          learning_rate=0.1, optim="sgd", lr_scheduler_type="linear", num_train_epochs=2,
                          max_grad_norm=1.0, logging_steps=1, save_strategy="no", **common),
        train_dataset=toys.regression_data(),
    )
    ref.train()
    for name, value in ref.model.state_dict().items():
        np.testing.assert_allclose(result["weights"][name], value.reshape(-1).tolist(), atol=1e-5, rtol=0)
    history = ref.state.log_history
    assert result["losses"] == pytest.approx([h["loss"] for h in history if "loss" in h], abs=1e-3)
    # the engine stepped the Trainer's scheduler once per optimizer step (not twice, not per micro-batch)
    assert result["lrs"] == pytest.approx([h["learning_rate"] for h in history if "learning_rate" in h])
    # checkpoint: the toolkit files plus DeepSpeed's own folder; resuming gives the same run
    assert {"model.safetensors", "manifest.json", "deepspeed", "zero_to_fp32.py"} <= set(result["checkpoint_files"])
    assert "optimizer.pt" not in result["checkpoint_files"]
    assert result["resumed_global_step"] == 4
    assert result["resumed_losses"] == pytest.approx(result["losses"], abs=1e-4)
    for name in result["weights"]:
        np.testing.assert_allclose(result["resumed"][name], result["weights"][name], atol=1e-6, rtol=0)


def test_trainer_bf16_offload_and_the_config_optimizer(trainer_run) -> None:
    result = trainer_run["offload"]
    assert result["dtype"] == "torch.bfloat16"
    config = result["config"]
    assert config["bf16"] == {"enabled": True}
    assert config["optimizer"]["params"] == {"lr": 0.1, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0,
                                             "torch_adam": True}
    assert config["zero_optimization"]["offload_optimizer"] == {"device": "cpu"}
    # the Trainer's linear schedule, rebuilt on DeepSpeed's optimizer and stepped by the engine
    assert result["scheduled"] == "AdamW"
    assert result["lrs"] == pytest.approx([0.075, 0.05, 0.025, 0.0])
    assert len(result["losses"]) == 4 and all(np.isfinite(result["losses"]))


def test_trainer_fp16_fills_the_auto_block_and_matches_the_fp32_run(trainer_run) -> None:
    result, fp32 = trainer_run["fp16"], trainer_run["zero2"]
    assert (result["dtype"], result["param_dtype"]) == ("torch.float16", "torch.float16")
    # "enabled" follows fp16=True; the loss-scale keys left "auto" are dropped (DeepSpeed's defaults)
    assert result["config_fp16"] == {"enabled": True, "loss_scale": 0, "initial_scale_power": 8, "hysteresis": 1}
    assert (result["skipped_steps"], result["loss_scale"]) == (0, 2.0**8)  # no overflow: the scale stayed
    for name, value in fp32["weights"].items():
        np.testing.assert_allclose(result["weights"][name], value, atol=3e-3, rtol=0, err_msg=name)
    assert result["losses"] == pytest.approx(fp32["losses"], rel=1e-2)
    assert result["lrs"] == pytest.approx(fp32["lrs"])


def test_trainer_fp16_overflow_skips_the_step_and_does_not_advance_the_scheduler(trainer_run) -> None:
    result, clean = trainer_run["fp16_overflow"], trainer_run["fp16"]
    assert result["skipped_steps"] == 1 and result["loss_scale"] == 2.0**7  # halved once (hysteresis 1)
    assert result["global_step"] == result["engine_global_steps"] == 4  # the skipped step still counts
    seen = result["seen"]  # the weight at each training forward: 2 micro-batches per step
    assert len(seen) == 8
    assert seen[0] == seen[1] == seen[2] == seen[3]  # step 1 left the weights alone
    assert seen[3] != seen[4]  # step 2 was applied
    # the scheduler stepped only on applied steps: every logged rate is one step behind the clean run
    assert result["lrs"] == pytest.approx([0.1, *clean["lrs"][:-1]])
    assert all(np.isfinite(result["weights"]["lin.weight"]))


def test_trainer_load_best_model_at_end_under_zero3(trainer_run) -> None:
    result = trainer_run["zero3_best"]
    assert result["stage"] == 3 and result["best"].endswith("checkpoint-2")
    best, last = result["checkpoints"]["checkpoint-2"], result["checkpoints"]["checkpoint-4"]
    assert best["lin.weight"] != last["lin.weight"]  # loading the best changes the weights
    for name, value in best.items():  # the partitioned parameters hold the best weights
        np.testing.assert_allclose(result["weights"][name], value, atol=1e-7, rtol=0, err_msg=name)
    # the engine evaluates with them, and its fp32 master copies were refreshed from them
    assert result["eval_after"] == pytest.approx(result["eval_losses"][0], rel=1e-6)
    assert result["eval_after"] != pytest.approx(result["eval_losses"][1], rel=1e-6)
    assert result["masters_fresh"]
