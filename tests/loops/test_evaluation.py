"""Tests for toolkit.loops.evaluation: the accumulator, the evaluation loop and metrics."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset

from toolkit.callbacks.base import CallbackHandler, TrainerCallback
from toolkit.loops.evaluation import EvaluationLoop, PredictionAccumulator, denumpify_detensorize
from toolkit.state import TrainerControl, TrainerState
from toolkit.types import EvalPrediction
from toolkit.utils.nested import nested_map

N_FEATURES, N_CLASSES = 3, 4


class ToyData(Dataset):
    """Deterministic classification samples."""

    def __init__(self, n: int = 10) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.randn(n, N_FEATURES, generator=g)
        self.y = torch.randint(0, N_CLASSES, (n,), generator=g)

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> dict:
        return {"input_ids": self.x[i], "labels": self.y[i]}


class ToyStream(IterableDataset):
    """The same samples, without a length."""

    def __init__(self, n: int = 10) -> None:
        self.data = ToyData(n)

    def __iter__(self):
        return (self.data[i] for i in range(len(self.data)))


def make_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Linear(N_FEATURES, N_CLASSES)


def step(model: nn.Module, inputs: dict, loss_only: bool, ignore_keys: list | None):
    """A plain prediction step: mean cross-entropy, logits, labels."""
    logits = model(inputs["input_ids"])
    loss = nn.functional.cross_entropy(logits, inputs["labels"])
    if loss_only:
        return loss, None, None
    return loss, logits, inputs["labels"]


def tuple_step(model, inputs, loss_only, ignore_keys):
    """Returns (logits, hidden) with a per-batch sequence length that varies."""
    loss, logits, labels = step(model, inputs, loss_only, ignore_keys)
    seq = logits.shape[0]  # length varies with the batch size
    hidden = torch.ones(logits.shape[0], seq, 2)
    return loss, (logits, hidden), labels


def dict_step(model, inputs, loss_only, ignore_keys):
    loss, logits, labels = step(model, inputs, loss_only, ignore_keys)
    return loss, {"scores": logits, "top": logits.argmax(-1)}, labels


def reference(ds: ToyData) -> tuple[np.ndarray, float]:
    with torch.no_grad():
        logits = make_model()(ds.x)
        return logits.numpy(), nn.functional.cross_entropy(logits, ds.y).item()


# ---------------------------------------------------------------- accumulator


def test_accumulator_holds_a_list_per_leaf_and_joins_once(monkeypatch) -> None:
    acc = PredictionAccumulator()
    batches = [(torch.full((2, 3), float(i)), {"h": torch.arange(2) + i}) for i in range(6)]
    for b in batches:
        acc.add(b)
    assert [len(held) for held in acc.device_chunks] == [6, 6]
    assert all(isinstance(held, list) for held in acc.device_chunks)

    calls = {"np": 0, "torch": 0}
    real_np, real_torch = np.concatenate, torch.cat
    monkeypatch.setattr(
        np, "concatenate", lambda *a, **k: calls.__setitem__("np", calls["np"] + 1) or real_np(*a, **k)
    )
    monkeypatch.setattr(
        torch, "cat", lambda *a, **k: calls.__setitem__("torch", calls["torch"] + 1) or real_torch(*a, **k)
    )
    logits, extra = acc.result()
    assert calls == {"np": 2, "torch": 0}  # once per leaf
    np.testing.assert_array_equal(logits, real_np([b[0].numpy() for b in batches]))
    np.testing.assert_array_equal(extra["h"], real_np([b[1]["h"].numpy() for b in batches]))
    assert acc.result()[0] is logits  # joined once, then kept


def test_accumulator_offload_clears_device_chunks() -> None:
    acc = PredictionAccumulator()
    for i in range(3):
        acc.add(torch.full((2,), i))
    acc.offload()
    assert acc.device_chunks == [[]]
    assert len(acc.host_chunks[0]) == 3 and isinstance(acc.host_chunks[0][0], np.ndarray)
    acc.add(torch.full((1,), 9))
    assert len(acc.device_chunks[0]) == 1
    assert acc.result().tolist() == [0, 0, 1, 1, 2, 2, 9]


def test_accumulator_pads_and_rejects_structure_change() -> None:
    acc = PredictionAccumulator(padding_index=-1)
    acc.add(torch.ones(1, 2))
    acc.add(torch.ones(1, 3))
    np.testing.assert_array_equal(acc.result(), [[1, 1, -1], [1, 1, 1]])
    acc2 = PredictionAccumulator()
    acc2.add((torch.ones(1), torch.ones(1)))
    with pytest.raises(ValueError, match="structure changed"):
        acc2.add((torch.ones(1),))
    assert PredictionAccumulator().result() is None


# ---------------------------------------------------------------- loop


def test_loss_weighting_with_uneven_last_batch_is_dataset_mean() -> None:
    ds = ToyData(10)
    out = EvaluationLoop(prediction_step=step).run(make_model(), DataLoader(ds, batch_size=4))
    ref_logits, ref_loss = reference(ds)
    assert out.metrics["eval_loss"] == pytest.approx(ref_loss, rel=1e-6)
    assert isinstance(out.metrics["eval_loss"], float)
    np.testing.assert_allclose(out.predictions, ref_logits, rtol=1e-6)
    np.testing.assert_array_equal(out.label_ids, ds.y.numpy())
    assert out.num_samples == 10


def test_loop_concatenates_per_leaf_not_per_batch(monkeypatch) -> None:
    calls = {"np": 0, "torch": 0}
    real_np, real_torch = np.concatenate, torch.cat
    monkeypatch.setattr(
        np, "concatenate", lambda *a, **k: calls.__setitem__("np", calls["np"] + 1) or real_np(*a, **k)
    )
    monkeypatch.setattr(
        torch, "cat", lambda *a, **k: calls.__setitem__("torch", calls["torch"] + 1) or real_torch(*a, **k)
    )
    loop = EvaluationLoop(prediction_step=dict_step)
    out = loop.run(make_model(), DataLoader(ToyData(40), batch_size=2))  # 20 batches, 3 leaves
    assert calls["torch"] == 0 and calls["np"] <= 3
    assert out.predictions["scores"].shape == (40, N_CLASSES)


def test_no_host_sync_per_batch_without_accumulation_steps(monkeypatch) -> None:
    steps = {"n": 0}
    syncs: list[tuple[str, int]] = []

    def counting_step(*a):
        steps["n"] += 1
        return step(*a)

    batches = list(DataLoader(ToyData(10), batch_size=2))  # the DataLoader itself calls .item()
    for name in ("cpu", "item", "numpy", "tolist"):
        real = getattr(torch.Tensor, name)

        def spy(self, *a, _real=real, _name=name, **k):
            syncs.append((_name, steps["n"]))
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    EvaluationLoop(prediction_step=counting_step).run(make_model(), batches)
    assert syncs, "the results are converted at the end"
    assert all(n == 5 for _, n in syncs), syncs  # only after the last of 5 batches


def test_eval_accumulation_steps_bounds_device_chunks(monkeypatch) -> None:
    peak = {"held": 0, "offloads": 0}
    real_add, real_offload = PredictionAccumulator.add, PredictionAccumulator.offload

    def add(self, tree):
        real_add(self, tree)
        if self.device_chunks:
            peak["held"] = max(peak["held"], len(self.device_chunks[0]))

    def offload(self):
        real_offload(self)
        peak["offloads"] += 1
        assert all(held == [] for held in self.device_chunks)

    monkeypatch.setattr(PredictionAccumulator, "add", add)
    monkeypatch.setattr(PredictionAccumulator, "offload", offload)
    ds = ToyData(10)
    # a plain list of batches has no dataset length, so nothing is pre-sized: the
    # per-batch chunks (what a GPU run keeps on the device) are what is bounded here
    out = EvaluationLoop(prediction_step=step, eval_accumulation_steps=2).run(
        make_model(), list(DataLoader(ds, batch_size=2))
    )
    assert peak["held"] == 2
    # 3 accumulators x 2 due offloads (after batches 2 and 4), then a final one for the
    # two that hold something (predictions, labels; inputs are not kept)
    assert peak["offloads"] == 3 * 2 + 2
    np.testing.assert_allclose(out.predictions, reference(ds)[0], rtol=1e-6)


def test_nested_tuple_outputs_preserved_and_padded() -> None:
    out = EvaluationLoop(prediction_step=tuple_step).run(make_model(), DataLoader(ToyData(10), batch_size=4))
    logits, hidden = out.predictions
    assert isinstance(out.predictions, tuple)
    assert logits.shape == (10, N_CLASSES)
    assert hidden.shape == (10, 4, 2)  # sequence lengths 4, 4, 2 padded to 4
    assert (hidden[:8] == 1).all()
    assert (hidden[8:, :2] == 1).all() and (hidden[8:, 2:] == -100).all()


def test_dict_outputs_preserved() -> None:
    ds = ToyData(7)
    out = EvaluationLoop(prediction_step=dict_step).run(make_model(), DataLoader(ds, batch_size=3))
    assert set(out.predictions) == {"scores", "top"}
    np.testing.assert_array_equal(out.predictions["top"], reference(ds)[0].argmax(-1))


def test_compute_metrics_gets_eval_prediction_and_keys_are_prefixed() -> None:
    seen = {}

    def compute_metrics(p: EvalPrediction) -> dict:
        seen["p"] = p
        preds, labels = p
        return {"accuracy": np.float64((preds.argmax(-1) == labels).mean()), "test_n": np.int64(len(labels))}

    ds = ToyData(9)
    loop = EvaluationLoop(prediction_step=step, compute_metrics=compute_metrics)
    out = loop.run(make_model(), DataLoader(ds, batch_size=4), metric_key_prefix="test")
    assert isinstance(seen["p"], EvalPrediction) and seen["p"].inputs is None
    logits, _ = reference(ds)
    assert set(out.metrics) == {"test_accuracy", "test_n", "test_loss"}
    assert out.metrics["test_accuracy"] == pytest.approx((logits.argmax(-1) == ds.y.numpy()).mean())
    assert type(out.metrics["test_accuracy"]) is float and type(out.metrics["test_n"]) is int


def test_preprocess_logits_for_metrics_applied_per_batch() -> None:
    calls = []

    def pre(logits, labels):
        calls.append(logits.shape[0])
        return logits.argmax(-1)

    ds = ToyData(10)
    loop = EvaluationLoop(prediction_step=step, preprocess_logits_for_metrics=pre)
    out = loop.run(make_model(), DataLoader(ds, batch_size=4))
    assert calls == [4, 4, 2]
    np.testing.assert_array_equal(out.predictions, reference(ds)[0].argmax(-1))


def test_include_inputs_for_metrics_passes_inputs() -> None:
    seen = {}

    def compute_metrics(p: EvalPrediction) -> dict:
        preds, labels, inputs = p
        seen["inputs"] = inputs
        return {}

    ds = ToyData(6)
    loop = EvaluationLoop(
        prediction_step=step, compute_metrics=compute_metrics, include_inputs_for_metrics=True
    )
    loop.run(make_model(), DataLoader(ds, batch_size=4))
    np.testing.assert_array_equal(seen["inputs"], ds.x.numpy())

    bad = EvaluationLoop(prediction_step=step, include_inputs_for_metrics=True, main_input_name="pixels")
    with pytest.raises(KeyError, match="pixels"):
        bad.run(make_model(), DataLoader(ds, batch_size=4))


def test_prediction_loss_only_returns_no_predictions() -> None:
    called = []
    loop = EvaluationLoop(prediction_step=step, prediction_loss_only=True, compute_metrics=called.append)
    ds = ToyData(10)
    out = loop.run(make_model(), DataLoader(ds, batch_size=4))
    assert out.predictions is None and out.label_ids is None and called == []
    assert out.metrics == {"eval_loss": pytest.approx(reference(ds)[1], rel=1e-6)}
    # the run argument overrides the constructor
    out2 = loop.run(make_model(), DataLoader(ds, batch_size=4), prediction_loss_only=False)
    assert out2.predictions.shape == (10, N_CLASSES)


def test_truncation_to_dataset_length_drops_padded_duplicates() -> None:
    ds = ToyData(5)
    # like a distributed sampler padding to a multiple: sample 0 is repeated at the end
    loader = DataLoader(ds, batch_size=3, sampler=[0, 1, 2, 3, 4, 0])
    out = EvaluationLoop(prediction_step=step).run(make_model(), loader)
    assert out.num_samples == 5
    np.testing.assert_allclose(out.predictions, reference(ds)[0], rtol=1e-6)
    np.testing.assert_array_equal(out.label_ids, ds.y.numpy())


def test_gather_hook_applied_per_batch() -> None:
    calls = []

    def gather(tree):  # simulates two ranks holding identical data
        calls.append(1)
        return nested_map(lambda t: torch.cat([t.reshape(-1) if t.ndim == 0 else t] * 2), tree)

    ds = ToyData(4)
    loop = EvaluationLoop(prediction_step=step, gather=gather)
    out = loop.run(make_model(), DataLoader(ds, batch_size=2))
    assert len(calls) == 2
    assert out.metrics["eval_loss"] == pytest.approx(reference(ds)[1], rel=1e-6)
    assert out.num_samples == 4 and out.predictions.shape == (4, N_CLASSES)  # truncated


def test_iterable_dataset_without_len() -> None:
    ds = ToyStream(10)
    out = EvaluationLoop(prediction_step=step).run(make_model(), DataLoader(ds, batch_size=4))
    assert out.num_samples == 10
    _, ref_loss = reference(ds.data)
    assert out.metrics["eval_loss"] == pytest.approx(ref_loss, rel=1e-6)
    # a plain list of batches (no .dataset) works too
    batches = list(DataLoader(ds, batch_size=3))
    assert EvaluationLoop(prediction_step=step).run(make_model(), batches).num_samples == 10


def test_on_prediction_step_fires_once_per_batch() -> None:
    class Count(TrainerCallback):
        def __init__(self) -> None:
            self.n = 0

        def on_prediction_step(self, args, state, control, **kwargs):
            self.n += 1

    cb = Count()
    state, control = TrainerState(), TrainerControl()
    loop = EvaluationLoop(
        prediction_step=step, callbacks=CallbackHandler([cb]), args="args", state=state, control=control
    )
    loop.run(make_model(), DataLoader(ToyData(10), batch_size=4))
    assert cb.n == 3
    assert loop.control is control


def test_model_mode_restored_and_eval_during_run() -> None:
    model = make_model()
    modes = []

    def spy_step(m, *a):
        modes.append(m.training)
        return step(m, *a)

    model.train()
    EvaluationLoop(prediction_step=spy_step).run(model, DataLoader(ToyData(4), batch_size=2))
    assert modes == [False, False] and model.training


def test_constructor_validates() -> None:
    with pytest.raises(ValueError, match="eval_accumulation_steps"):
        EvaluationLoop(prediction_step=step, eval_accumulation_steps=0)
    with pytest.raises(TypeError, match="prediction_step"):
        EvaluationLoop(prediction_step=None)


def test_denumpify_detensorize() -> None:
    out = denumpify_detensorize(
        {"a": np.float32(0.25), "b": torch.tensor(2.0), "c": [np.int64(1), (np.array(3.5),)], "d": "x"}
    )
    assert out == {"a": 0.25, "b": 2.0, "c": [1, (3.5,)], "d": "x"}
    assert type(out["a"]) is float and type(out["c"][0]) is int
