"""DeepSpeed ZeRO 2 and 3 on CPU (gloo), 2 real processes under ``torchrun``.

One launch runs `driver_deepspeed.py`, which trains with `DeepSpeedStrategy` in a
hand-written loop for both stages, saves and resumes a DeepSpeed checkpoint and exports
the full weights; the single-process reference (same global batch) is computed here.
DeepSpeed's own compiled ops are not used (torch optimizers), so no long compile runs;
``TORCH_EXTENSIONS_DIR`` is cached under the pytest cache.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("ddp_toys", HERE / "ddp_toys.py")
toys = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(toys)

LAUNCH_ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "GROUP_RANK", "MASTER_ADDR",
                   "MASTER_PORT", "SLURM_NTASKS")


def _deepspeed_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in LAUNCH_ENV_VARS}
    env.setdefault("DS_ACCELERATOR", "cuda" if torch.cuda.is_available() else "cpu")
    env.setdefault("DS_BUILD_OPS", "0")
    env.setdefault("TORCH_EXTENSIONS_DIR", str(Path.home() / ".cache" / "toolkit-torch-extensions"))
    env["OMP_NUM_THREADS"] = "1"
    return env


def _launch(driver: str, out: Path) -> dict:
    if importlib.util.find_spec("deepspeed") is None:
        pytest.skip("deepspeed is not installed (pip install 'toolkit[deepspeed]')")
    if not torch.distributed.is_available():
        pytest.skip("torch.distributed is not available in this build")
    beside = Path(sys.executable).with_name("torchrun")
    exe = str(beside) if beside.exists() else shutil.which("torchrun")
    if exe is None:
        pytest.skip("torchrun is not available")
    proc = subprocess.run(
        [exe, "--standalone", "--nproc_per_node", "2", str(HERE / driver), str(out)],
        cwd=HERE, env=_deepspeed_env(), capture_output=True, text=True, timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("@@RESULT@@ ")]
    if proc.returncode != 0 or len(lines) != 1:
        pytest.fail(f"{driver} failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}")
    return json.loads(lines[0][len("@@RESULT@@ "):])


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
