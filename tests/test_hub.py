"""Pushing to a model store: ``file://`` and S3 (moto) stores a later run resumes from,
background pushes that never lose an error, and clear errors for Hub repository ids
without ``huggingface_hub`` or a network."""

from __future__ import annotations

import json
import pathlib
import sys
import threading

import pytest
import torch
from torch import nn

from toolkit import Trainer, TrainingArguments
from toolkit.callbacks import TrainerCallback
from toolkit.checkpoint import FsspecCheckpointIO
from toolkit.checkpoint.serialization import tensors_from_bytes
from toolkit.hub import FsspecModelStore, HubModelStore, HubPushError, HubSync, ModelPusher, model_store

MAX_STEPS, STOP_AT = 8, 6


class Reg(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.drop = nn.Dropout(0.2)  # consumes random numbers, so a resume must restore them

    def forward(self, x, labels=None):
        out = self.lin(self.drop(x)).squeeze(-1)
        return {"loss": nn.functional.mse_loss(out, labels), "logits": out}


def data(n: int = 24) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 4, generator=g)
    y = x @ torch.arange(1.0, 5.0)
    return [{"x": x[i], "labels": y[i]} for i in range(n)]


class StopAt(TrainerCallback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step >= self.step:
            control.should_training_stop = True


class StartStep(TrainerCallback):
    def __init__(self) -> None:
        self.step = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.step = state.global_step


def make_trainer(output_dir, seed: int = 0, callbacks=None, **overrides) -> Trainer:
    values = dict(
        report_to="none", disable_tqdm=True, use_cpu=True, max_steps=MAX_STEPS, per_device_train_batch_size=4,
        save_strategy="steps", save_steps=2, logging_steps=1, learning_rate=0.05, lr_scheduler_type="linear",
    )
    values.update(overrides)
    torch.manual_seed(seed)
    return Trainer(Reg(), TrainingArguments(str(output_dir), **values), train_dataset=data(), callbacks=callbacks)


def weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """Final weights of an uninterrupted run without pushing."""
    trainer = make_trainer(tmp_path_factory.mktemp("reference"))
    trainer.train()
    return weights(trainer.model)


def push_stop_and_resume(tmp_path, store: str, read, reference) -> None:
    """Train with hub_strategy="checkpoint" and stop at step 6; a fresh trainer elsewhere resumes
    from ``<store>/last-checkpoint`` and ends with the weights of the uninterrupted run."""
    first = make_trainer(tmp_path / "first", callbacks=[StopAt(STOP_AT)], push_to_hub=True, hub_model_id=store,
                         hub_strategy="checkpoint", hub_always_push=True)
    first.train()  # the pushes finish before train() returns
    pushed = tensors_from_bytes(read("model.safetensors"))
    for k, v in weights(first.model).items():
        assert torch.equal(pushed[k], v), k
    assert json.loads(read("training_args.json"))["hub_strategy"] == "checkpoint"
    last = f"{store}/last-checkpoint"
    saved = FsspecCheckpointIO().load(last)
    assert saved["trainer_state.json"]["global_step"] == STOP_AT and "optimizer.pt" in saved

    starts = StartStep()
    second = make_trainer(tmp_path / "second", seed=1, callbacks=[starts])
    second.train(resume_from_checkpoint=last)
    assert starts.step == STOP_AT and second.state.global_step == MAX_STEPS
    for k, v in weights(second.model).items():
        assert torch.equal(v, reference[k]), k

    url = first.push_to_hub(language="en")  # the final push: model, card and arguments
    assert url == store.rstrip("/")
    assert read("README.md").decode("utf-8").startswith("---\n")


def test_push_to_a_file_store_and_resume_from_last_checkpoint(tmp_path, reference):
    store = f"file://{tmp_path}/store"
    push_stop_and_resume(tmp_path, store, lambda name: (tmp_path / "store" / name).read_bytes(), reference)
    pushed = sorted(p.name for p in (tmp_path / "store").iterdir())
    assert pushed == ["README.md", "last-checkpoint", "model.safetensors", "training_args.json",
                      "training_curves.png"]  # no checkpoint-<n> folders


# --------------------------------------------------------------------------- s3:// (moto) (the ``s3`` fixture is in tests/conftest.py)


def test_push_to_s3_and_resume_from_last_checkpoint(tmp_path, s3, reference):
    bucket, client = s3

    def read(name):
        return client.get_object(Bucket=bucket, Key=f"models/reg/{name}")["Body"].read()

    push_stop_and_resume(tmp_path, f"s3://{bucket}/models/reg", read, reference)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="models/reg/last-checkpoint/")
    keys = sorted(o["Key"].rsplit("/", 1)[-1] for page in pages for o in page.get("Contents", []))
    assert "manifest.json" in keys and ".toolkit-partial" not in keys


# --------------------------------------------------------------------------- strategies


def test_all_checkpoints_pushes_each_checkpoint_folder(tmp_path):
    store = tmp_path / "store"
    trainer = make_trainer(tmp_path / "out", push_to_hub=True, hub_model_id=str(store),
                           hub_strategy="all_checkpoints", max_steps=4)
    trainer.train()
    io = FsspecCheckpointIO()
    assert [io.load(str(store / f"checkpoint-{s}"))["trainer_state.json"]["global_step"] for s in (2, 4)] == [2, 4]
    assert not (store / "last-checkpoint").exists()


def test_every_save_pushes_the_model_only_and_end_pushes_nothing(tmp_path):
    every = make_trainer(tmp_path / "a", push_to_hub=True, hub_model_id=str(tmp_path / "s1"), max_steps=2)
    every.train()
    assert sorted(p.name for p in (tmp_path / "s1").iterdir()) == ["model.safetensors", "training_args.json"]
    end = make_trainer(tmp_path / "b", push_to_hub=True, hub_model_id=str(tmp_path / "s2"), hub_strategy="end",
                       max_steps=2)
    end.train()
    assert list((tmp_path / "s2").iterdir()) == []
    end.save_model()  # with push_to_hub=True, save_model pushes
    assert (tmp_path / "s2" / "model.safetensors").is_file() and (tmp_path / "s2" / "README.md").is_file()


def test_set_push_to_hub_turns_pushing_on():
    args = TrainingArguments("out", report_to="none").set_push_to_hub("memory://x/y", strategy="checkpoint")
    assert args.push_to_hub is True and args.hub_model_id == "memory://x/y" and args.hub_strategy == "checkpoint"


def test_pushing_into_output_dir_is_refused(tmp_path):
    with pytest.raises(ValueError, match="output_dir itself"):
        make_trainer(tmp_path, push_to_hub=True, hub_model_id=str(tmp_path))


# --------------------------------------------------------------------------- background pushes


class GatedStore(FsspecModelStore):
    """Writes only once ``gate`` is set; fails when ``error`` is set."""

    def __init__(self, url: str, error: Exception | None = None) -> None:
        super().__init__(url)
        self.gate = threading.Event()
        self.error = error
        self.calls = 0

    def put_files(self, files, folder="", commit_message=""):
        self.calls += 1
        assert self.gate.wait(10), "test gate never opened"
        if self.error is not None:
            raise self.error
        super().put_files(files, folder, commit_message)


def test_non_blocking_push_returns_before_the_push_finished(tmp_path):
    trainer = make_trainer(tmp_path / "out", save_strategy="no", max_steps=2)
    trainer.train()
    store = GatedStore(str(tmp_path / "store"))
    trainer.hub_sync = HubSync(trainer, store=store)
    future = trainer.push_to_hub(blocking=False)
    assert not future.done() and not (tmp_path / "store" / "model.safetensors").exists()
    store.gate.set()
    assert future.result(timeout=10) == str(tmp_path / "store")
    assert (tmp_path / "store" / "model.safetensors").is_file()


def test_a_failed_background_push_surfaces_on_the_next_push(tmp_path):
    trainer = make_trainer(tmp_path / "out", save_strategy="no", max_steps=2)
    trainer.train()
    store = GatedStore(str(tmp_path / "store"), error=OSError("store is read-only"))
    trainer.hub_sync = HubSync(trainer, store=store)
    trainer.push_to_hub(blocking=False)
    store.gate.set()
    with pytest.raises(OSError, match="read-only"):
        trainer.push_to_hub()
    assert store.calls == 1  # the second push did not start
    store.error = None
    assert trainer.push_to_hub() == str(tmp_path / "store")  # reported once, then pushing works again


def test_a_failed_push_during_training_surfaces_at_the_end(tmp_path):
    trainer = make_trainer(tmp_path / "out", max_steps=2)  # one save, at step 2
    store = GatedStore(str(tmp_path / "store"), error=OSError("bucket gone"))
    store.gate.set()
    trainer.args.push_to_hub = True
    trainer.hub_sync = HubSync(trainer, store=store)
    with pytest.raises(OSError, match="bucket gone"):
        trainer.train()
    assert (tmp_path / "out" / "checkpoint-2").is_dir()  # the checkpoint itself was saved


def test_busy_pusher_skips_unless_always_push(tmp_path):
    store = GatedStore(str(tmp_path / "store"))
    with ModelPusher(store) as pusher:
        first = pusher.push({"a.txt": b"1"}, blocking=False)
        assert pusher.busy
        assert pusher.push({"a.txt": b"2"}, blocking=False, skip_if_busy=True) is None
        queued = pusher.push({"a.txt": b"3"}, blocking=False)
        store.gate.set()
        assert first.result(10) == queued.result(10) == str(tmp_path / "store")
    assert (tmp_path / "store" / "a.txt").read_bytes() == b"3" and store.calls == 2


def test_a_pushed_snapshot_does_not_see_later_changes(tmp_path):
    store = GatedStore(str(tmp_path / "store"))
    tensor = torch.zeros(3)
    with ModelPusher(store) as pusher:
        pusher.push({"model.safetensors": {"w": tensor}}, blocking=False)
        tensor.add_(1.0)  # training goes on while the push waits
        store.gate.set()
    assert torch.equal(tensor_file(tmp_path / "store" / "model.safetensors")["w"], torch.zeros(3))


def tensor_file(path) -> dict[str, torch.Tensor]:
    return tensors_from_bytes(path.read_bytes())


# --------------------------------------------------------------------------- Hub repository ids


def test_hub_repo_id_without_huggingface_hub(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "huggingface_hub", None)
    with pytest.raises(ImportError, match=r'pip install "toolkit\[hub\]".*file://'):
        make_trainer(tmp_path, push_to_hub=True, hub_model_id="someone/tiny-model")


def test_hub_repo_id_offline(tmp_path, monkeypatch):
    pytest.importorskip("huggingface_hub")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubPushError, match="someone/tiny-model.: offline mode"):
        make_trainer(tmp_path, push_to_hub=True, hub_model_id="someone/tiny-model")
    trainer = make_trainer(tmp_path / "tiny-run", save_strategy="no", max_steps=1)
    with pytest.raises(HubPushError, match="'tiny-run'"):  # no hub_model_id: the output_dir name
        trainer.push_to_hub()


class FakeApi:
    """An ``HfApi`` stand-in that records calls (no network)."""

    def __init__(self, fail: Exception | None = None) -> None:
        self.fail = fail
        self.calls: list[tuple[str, dict]] = []

    def create_repo(self, repo_id, **kwargs):
        if self.fail is not None:
            raise self.fail
        self.calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def create_commit(self, repo_id, operations, **kwargs):
        self.calls.append(("create_commit", {"repo_id": repo_id, "paths": [op.path_in_repo for op in operations],
                                             **kwargs}))

    def upload_folder(self, **kwargs):
        names = sorted(p.name for p in pathlib.Path(kwargs["folder_path"]).iterdir())
        self.calls.append(("upload_folder", {**kwargs, "names": names}))


def test_hub_store_commits_files_and_replaces_checkpoint_folders():
    pytest.importorskip("huggingface_hub")
    api = FakeApi()
    store = HubModelStore("someone/tiny", token="tok", private=True, api=api)
    store.put_files({"model.safetensors": b"x", "sub/vocab.txt": b"a"}, commit_message="step 2")
    store.put_checkpoint({"trainer_state.json": {"global_step": 2}, "manifest.json": b"old"}, "last-checkpoint")
    (create, repo), (commit, files_call), (upload, folder_call) = api.calls
    assert create == "create_repo" and repo["private"] is True and repo["exist_ok"] is True
    assert commit == "create_commit" and files_call["paths"] == ["model.safetensors", "sub/vocab.txt"]
    assert files_call["commit_message"] == "step 2" and files_call["token"] == "tok"
    assert upload == "upload_folder" and folder_call["path_in_repo"] == "last-checkpoint"
    assert folder_call["delete_patterns"] == "*" and folder_call["names"] == ["manifest.json", "trainer_state.json"]


def test_hub_store_network_failure_is_clear():
    pytest.importorskip("huggingface_hub")
    store = HubModelStore("someone/tiny", api=FakeApi(fail=ConnectionError("no route to host")))
    with pytest.raises(HubPushError, match="Could not create or reach.*'someone/tiny'.*no route to host"):
        store.put_files({"a.txt": b"1"})


def test_model_store_parses_hub_model_id(tmp_path):
    assert isinstance(model_store("memory://a/b"), FsspecModelStore)
    assert isinstance(model_store(str(tmp_path)), FsspecModelStore)
    with pytest.raises(ValueError, match="neither a store URL"):
        model_store("not a repo id!")
