"""``output_dir`` as an fsspec URL: ``memory://`` and a real S3 protocol (moto's standalone
server on 127.0.0.1). Checkpoints, bit-identical resume, ``save_model``, ``save_state`` and
``save_metrics`` all land in the remote store and read back."""

from __future__ import annotations

import json
import os
import uuid

import fsspec
import pytest
import torch
from torch import nn

from toolkit import Trainer
from toolkit.callbacks import TrainerCallback
from toolkit.checkpoint import files, get_last_checkpoint
from toolkit.checkpoint.serialization import save_tensors, tensors_from_bytes

# 24 samples / batch 2 = 12 micro-batches; GA=2 gives 6 optimizer steps per epoch. The first
# run stops after step 5, so the newest checkpoint is checkpoint-4 (mid-epoch).
N_SAMPLES, MAX_STEPS, STOP_AT = 24, 8, 5


class StopAt(TrainerCallback):
    """Ends training after ``step`` (a clean stop standing in for a killed job)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


class StartStep(TrainerCallback):
    """Remembers ``global_step`` when training begins (after a resume has loaded the state)."""

    def __init__(self) -> None:
        self.step: int | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.step = state.global_step


def _trainer(h, output_dir, model_seed=0, callbacks=None, model=None, tokenizer=None):
    args = h.make_args(
        output_dir, max_steps=MAX_STEPS, per_device_train_batch_size=2, gradient_accumulation_steps=2,
        save_strategy="steps", save_steps=2, logging_steps=1, optim="adamw_torch", learning_rate=0.05,
        lr_scheduler_type="linear", warmup_steps=2,
    )
    model = model if model is not None else h.seeded(h.DropoutRegressor, seed=model_seed)
    return Trainer(model, args, train_dataset=h.regression_data(N_SAMPLES), callbacks=callbacks,
                   tokenizer=tokenizer, data_collator=None if tokenizer is None else _collate)


def _collate(items):
    return {k: torch.stack([item[k] for item in items]) for k in items[0]}


@pytest.fixture(scope="module")
def reference(tmp_path_factory, h):
    """The uninterrupted local run: final weights and logged losses."""
    trainer = _trainer(h, tmp_path_factory.mktemp("reference"))
    trainer.train()
    return h.weights(trainer.model), h.train_losses(trainer.state.log_history)


def _interrupt_and_resume(h, output_dir, reference):
    """Train until `STOP_AT`, then resume with ``resume_from_checkpoint=True`` in a new
    trainer whose model starts from other weights; the result must equal the reference."""
    first = _trainer(h, output_dir, callbacks=[StopAt(STOP_AT)])
    first.train()
    assert first.state.global_step == STOP_AT
    last = get_last_checkpoint(output_dir)
    assert last == f"{output_dir}/checkpoint-4"
    starts = StartStep()
    second = _trainer(h, output_dir, model_seed=1, callbacks=[starts])
    second.train(resume_from_checkpoint=True)
    assert starts.step == 4
    weights, losses = reference
    final = h.weights(second.model)
    assert second.state.global_step == MAX_STEPS
    for k in weights:
        assert torch.equal(final[k], weights[k]), k
    assert h.train_losses(second.state.log_history) == losses
    return second


def _check_saved_files(h, trainer, output_dir, read):
    """``save_model``, ``save_state`` and ``save_metrics`` write into ``output_dir``;
    ``read(name)`` returns a file's bytes from the store."""
    trainer.save_model()
    trainer.save_state()
    trainer.save_metrics("train", {"train_loss": 0.5})
    trainer.save_metrics("eval", {"eval_loss": 0.25})
    saved = tensors_from_bytes(read("model.safetensors"))
    expected = h.weights(trainer.model)
    assert saved.keys() == expected.keys()
    for k in expected:
        assert torch.equal(saved[k], expected[k]), k
    assert json.loads(read("training_args.json"))["output_dir"] == output_dir
    state = json.loads(read("trainer_state.json"))
    assert state["global_step"] == MAX_STEPS and state["best_model_checkpoint"] is None
    assert json.loads(read("train_results.json")) == {"train_loss": 0.5}
    assert json.loads(read("all_results.json")) == {"train_loss": 0.5, "eval_loss": 0.25}


# --------------------------------------------------------------------------- memory://


@pytest.fixture
def memory_dir():
    """A fresh ``memory://`` folder, removed afterwards (the store lives as long as the process)."""
    root = f"memory://toolkit-test-{uuid.uuid4().hex}"
    yield f"{root}/run"
    files.remove(root)
    assert not fsspec.filesystem("memory").exists(root)


def test_memory_output_dir_checkpoints_resume_and_saves(h, memory_dir, reference):
    trainer = _interrupt_and_resume(h, memory_dir, reference)
    listing = sorted(p.rsplit("/", 1)[-1] for p in fsspec.filesystem("memory").ls(memory_dir, detail=False))
    assert [n for n in listing if n.startswith("checkpoint")] == [
        "checkpoint-2", "checkpoint-4", "checkpoint-6", "checkpoint-8"
    ]
    assert "training_curves.png" in listing  # the run report is written through fsspec too
    assert files.exists(f"{memory_dir}/checkpoint-8/manifest.json")
    _check_saved_files(h, trainer, memory_dir, lambda name: files.read_bytes(f"{memory_dir}/{name}"))


class LocalOnlyTokenizer:
    """Writes with plain ``open``, as ``transformers`` does: it needs a local folder."""

    def save_pretrained(self, save_directory):
        assert os.path.isdir(save_directory), save_directory
        os.makedirs(os.path.join(save_directory, "sub"), exist_ok=True)
        with open(os.path.join(save_directory, "tokenizer_config.json"), "w", encoding="utf-8") as f:
            f.write('{"kind": "fake"}')
        with open(os.path.join(save_directory, "sub", "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("a\nb\n")


class PretrainedRegressor(nn.Module):
    """A model with a local-only ``save_pretrained``, like a ``transformers`` model."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x, labels=None):
        out = self.lin(x).squeeze(-1)
        return {"logits": out} if labels is None else {"loss": nn.functional.mse_loss(out, labels), "logits": out}

    def save_pretrained(self, save_directory, state_dict=None, safe_serialization=True):
        assert os.path.isdir(save_directory), save_directory
        save_tensors(state_dict, os.path.join(save_directory, "model.safetensors"))


def test_memory_save_model_stages_local_only_writers(h, memory_dir):
    torch.manual_seed(0)
    model = PretrainedRegressor()
    trainer = _trainer(h, memory_dir, model=model, tokenizer=LocalOnlyTokenizer())
    target = f"{memory_dir}/final"
    trainer.save_model(target)
    names = sorted(p.split("/final/", 1)[1] for p in fsspec.filesystem("memory").find(target))
    assert names == ["model.safetensors", "sub/vocab.txt", "tokenizer_config.json", "training_args.json"]
    assert files.read_bytes(f"{target}/sub/vocab.txt") == b"a\nb\n"
    saved = tensors_from_bytes(files.read_bytes(f"{target}/model.safetensors"))
    assert torch.equal(saved["lin.weight"], model.lin.weight.detach())


# --------------------------------------------------------------------------- s3:// (moto) (the ``s3`` fixture is in tests/conftest.py)

def _keys(client, bucket, prefix):
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def test_s3_output_dir_checkpoints_resume_and_saves(h, s3, reference):
    bucket, client = s3
    output_dir = f"s3://{bucket}/run"
    trainer = _interrupt_and_resume(h, output_dir, reference)
    keys = _keys(client, bucket, "run/")
    for step in (2, 4, 6, 8):
        assert f"run/checkpoint-{step}/manifest.json" in keys
        assert f"run/checkpoint-{step}/model.safetensors" in keys
    assert not [k for k in keys if k.endswith(".toolkit-partial")]
    manifest = json.loads(client.get_object(Bucket=bucket, Key="run/checkpoint-4/manifest.json")["Body"].read())
    assert manifest["format"] == "toolkit-checkpoint" and "optimizer.pt" in manifest["files"]
    assert get_last_checkpoint(output_dir) == f"{output_dir}/checkpoint-8"

    def read(name):
        return client.get_object(Bucket=bucket, Key=f"run/{name}")["Body"].read()

    _check_saved_files(h, trainer, output_dir, read)


def test_s3_checkpoints_written_elsewhere_are_not_hidden_by_the_listing_cache(h, s3, reference):
    """s3fs caches listings per (shared) file-system instance. A checkpoint uploaded by
    another process after this one listed the folder must still be found for resuming."""
    import s3fs

    bucket, client = s3
    _trainer(h, f"s3://{bucket}/first", callbacks=[StopAt(STOP_AT)]).train()
    shared, _ = fsspec.core.url_to_fs(f"s3://{bucket}/run")
    files.write_bytes(f"s3://{bucket}/run/README", b"resume me")
    assert shared.ls(f"{bucket}/run", detail=False) == [f"{bucket}/run/README"]  # now cached
    other = s3fs.S3FileSystem(skip_instance_cache=True)  # "another process"
    for key in _keys(client, bucket, "first/checkpoint-4/"):
        other.pipe_file(f"{bucket}/run/{key.split('/', 1)[1]}", client.get_object(Bucket=bucket, Key=key)["Body"].read())
    starts = StartStep()
    trainer = _trainer(h, f"s3://{bucket}/run", model_seed=1, callbacks=[starts])
    trainer.train(resume_from_checkpoint=True)
    assert starts.step == 4
    weights, _ = reference
    final = h.weights(trainer.model)
    for k in weights:
        assert torch.equal(final[k], weights[k]), k
