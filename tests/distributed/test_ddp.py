"""DDP on CPU with gloo, 2 real processes: the Trainer under ``torchrun`` and a
hand-written loop with `DDPStrategy` under ``accelerate launch --multi_gpu``.

Each launch costs several seconds (mostly importing torch), so one launch per launcher
runs a driver script that performs many checks and prints its figures as JSON from
rank 0; the single-process references are computed here, in the test process.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit import Trainer, TrainingArguments

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

HERE = Path(__file__).resolve().parent
_spec = importlib.util.spec_from_file_location("_launch", HERE / "_launch.py")
launcher = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(launcher)
toys = launcher.load_toys()


@pytest.fixture(scope="module")
def trainer_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("ddp_trainer")
    return launcher.launch(launcher.torchrun(), "driver_trainer.py", str(out)), out


def _single(tmp_path: Path, **kw) -> TrainingArguments:
    return TrainingArguments(str(tmp_path), **{**toys.COMMON, **kw})


def test_ddp_training_equals_single_process_on_the_same_global_batch(trainer_run, tmp_path) -> None:
    result, _ = trainer_run
    assert (result["strategy"], result["world_size"], result["wrapped"]) == ("DDPStrategy", 2, "DistributedDataParallel")
    ref = toys.trained_reference(
        toys.Regression, toys.regression_data(), tmp_path / "reg",
        per_device_train_batch_size=6, num_train_epochs=2, optim="sgd", learning_rate=0.1,
        logging_steps=2, save_strategy="no",
    )
    toys.assert_weights_close(result["reg_weights"], toys.weights(ref.model), 1e-5)
    assert result["reg_losses"] == pytest.approx(toys.logged_losses(ref), abs=1e-3)

    # padded token labels + accumulation: the items of a window are counted over both ranks
    ref = toys.trained_reference(
        toys.TokenModel, toys.padded_token_data(), tmp_path / "tok",
        per_device_train_batch_size=4, gradient_accumulation_steps=2, num_train_epochs=2,
        optim="sgd", learning_rate=0.5, logging_steps=1, save_strategy="no",
    )
    toys.assert_weights_close(result["tok_weights"], toys.weights(ref.model), 1e-5)
    assert result["tok_losses"] == pytest.approx(toys.logged_losses(ref), abs=1e-3)


def test_evaluation_and_prediction_return_each_sample_once_in_order(trainer_run, tmp_path) -> None:
    result, _ = trainer_run
    data = toys.classification_data()
    ref = Trainer(toys.seeded(toys.Classifier), _single(tmp_path / "cls", per_device_eval_batch_size=4),
                  compute_metrics=toys.class_metrics)
    ref_metrics = ref.evaluate(data)
    rank0, rank1 = result["eval_metrics"]
    assert rank0 == rank1  # metrics are computed on the gathered predictions on every rank
    assert rank0["eval_rows"] == 13
    assert rank0["eval_accuracy"] == pytest.approx(ref_metrics["eval_accuracy"])
    assert rank0["eval_loss"] == pytest.approx(ref_metrics["eval_loss"], abs=1e-6)  # mean over all 13 samples

    pred = ref.predict(data)  # rank 0 holds 3 batches of 3, rank 1 two: the short rank still gathers
    np.testing.assert_allclose(result["cls_predictions"], pred.predictions, atol=1e-6)
    assert result["cls_labels"] == [int(d["labels"]) for d in data]
    assert result["cls_test_metrics"]["test_rows"] == 13
    assert result["cls_test_metrics"]["test_loss"] == pytest.approx(pred.metrics["test_loss"], abs=1e-6)

    tok = Trainer(toys.seeded(toys.TokenModel),
                  _single(tmp_path / "tok", per_device_eval_batch_size=2, include_inputs_for_metrics=True),
                  data_collator=toys.pad_collate, compute_metrics=toys.token_metrics)
    tok_pred = tok.predict(toys.ragged_token_data())
    labels = np.asarray(result["tok_pred_labels"])
    np.testing.assert_array_equal(labels, tok_pred.label_ids)  # sequence lengths padded with -100 across ranks
    mask = labels != -100
    np.testing.assert_allclose(np.asarray(result["tok_pred_predictions"])[mask], tok_pred.predictions[mask], atol=1e-6)
    # (test_loss is left out: a per-token mean weighted by samples depends on how batches are cut)
    keys = ("test_token_accuracy", "test_rows", "test_inputs_rows")
    tok_metrics = {k: tok_pred.metrics[k] for k in keys}
    assert result["tok_pred_metrics"][0] == result["tok_pred_metrics"][1]
    assert {k: result["tok_pred_metrics"][0][k] for k in keys} == pytest.approx(tok_metrics, abs=1e-6)
    assert tok_metrics["test_inputs_rows"] == 13


def test_checkpoint_per_rank_rng_only_rank_zero_writes_and_exact_resume(trainer_run, tmp_path) -> None:
    result, out = trainer_run
    for name, files in result["ckpt_files"].items():
        assert {"rng_state_0.pth", "rng_state_1.pth", "model.safetensors", "optimizer.pt"} <= set(files), name
        assert "rng_state.pth" not in files
    assert sorted(result["ckpt_files"]) == ["checkpoint-3", "checkpoint-6"]
    for name in ("model.safetensors", "trainer_state.json", "train_results.json", "all_results.json"):
        assert (out / "ckpt" / name).exists(), name
    # the other rank wrote nothing but the probe that shows its audit hook was listening
    assert result["writes_by_other_ranks"] == [[f"open {out / 'probe-rank1.txt'}"]]
    # resumed by 2 processes from checkpoint-3: the same weights as the uninterrupted run
    toys.assert_weights_close(result["resumed_weights"], result["ckpt_weights"], 1e-7)
    # resumed by one process (per-device batch doubled) from the same DDP checkpoint
    single = Trainer(
        toys.seeded(toys.Regression),
        _single(tmp_path / "resume", per_device_train_batch_size=6, max_steps=6, learning_rate=0.01,
                logging_steps=3, save_strategy="no"),
        train_dataset=toys.regression_data(),
    )
    single.train(resume_from_checkpoint=str(out / "ckpt" / "checkpoint-3"))
    toys.assert_weights_close(toys.weights(single.model), result["ckpt_weights"], 1e-5)


def test_rank_flags_logging_and_main_process_first(trainer_run) -> None:
    result, _ = trainer_run
    assert result["zero"] == [[True, True], [False, False]]  # world zero, local zero
    assert result["replica_log_level"][1] == 40  # log_level_replica="error" on rank 1
    assert result["main_first_seen"] == [True, True]  # rank 1 entered after rank 0 wrote


def test_ddp_strategy_in_a_custom_loop_under_accelerate_launch() -> None:
    result = launcher.launch(launcher.accelerate(), "driver_composer.py")
    assert result["world_size"] == 2 and result["ranks"] == [[0, 0, 0], [1, 1, 0]]
    assert result["samples_per_rank"] == 12 and result["replicas_equal"]
    # reference: one process, the same 12 samples per update (2 ranks x 2 micro-batches x 3)
    model = toys.seeded(toys.Regression)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    data = toys.regression_data()
    batch = {k: torch.stack([d[k] for d in data]) for k in data[0]}
    for _ in range(2):
        for half in (slice(0, 12), slice(12, 24)):
            model(**{k: v[half] for k, v in batch.items()})["loss"].backward()
            optimizer.step()
            optimizer.zero_grad()
    toys.assert_weights_close(result["weights"], toys.weights(model), 1e-5)
    assert (result["sum"], result["mean"], result["max"]) == (3.0, 1.5, 2.0)
    assert result["padded_gather"] == [
        [[1.0, 1.0, 1.0, -1.0, -1.0], [1.0, 1.0, 1.0, -1.0, -1.0]],
        [[2.0, 2.0, 2.0, 2.0, 2.0], [-1.0, -1.0, -1.0, -1.0, -1.0]],
    ]
    assert result["broadcast"] == "from-1" and result["group_destroyed"]
