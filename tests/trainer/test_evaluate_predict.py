"""`Trainer.evaluate` and `Trainer.predict`: metrics, prefixes, schedules during training,
output structures, padding across batches, and the options that shape predictions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from toolkit import Trainer
from toolkit.types import EvalPrediction, PredictionOutput


def _accuracy(pred: EvalPrediction) -> dict[str, float]:
    return {"accuracy": float((pred.predictions.argmax(-1) == pred.label_ids).mean())}


def _manual_accuracy(model, data) -> float:
    x = torch.stack([d["x"] for d in data])
    y = torch.stack([d["labels"] for d in data])
    with torch.no_grad():
        return float((model(x)["logits"].argmax(-1) == y).float().mean())


# ----------------------------------------------------------------------------- evaluate


def test_evaluate_returns_prefixed_metrics(h, tmp_path):
    model = h.seeded(h.Classifier)
    data = h.classification_data(10)
    trainer = Trainer(model, h.make_args(tmp_path), eval_dataset=data, compute_metrics=_accuracy)
    metrics = trainer.evaluate()
    for key in (
        "eval_loss",
        "eval_accuracy",
        "eval_runtime",
        "eval_samples_per_second",
        "eval_steps_per_second",
    ):
        assert key in metrics, key
    assert metrics["eval_accuracy"] == pytest.approx(_manual_accuracy(model, data))
    x = torch.stack([d["x"] for d in data])
    y = torch.stack([d["labels"] for d in data])
    with torch.no_grad():
        assert metrics["eval_loss"] == pytest.approx(float(model(x, y)["loss"]), abs=1e-6)
    # the metrics were logged and reached the history
    assert trainer.state.log_history[-1]["eval_accuracy"] == metrics["eval_accuracy"]


def test_evaluate_weights_the_loss_by_batch_size(h, tmp_path):
    """10 samples in batches of 4, 4, 2: the loss is the per-sample mean, not the batch mean."""
    model = h.seeded(h.Regressor)
    data = h.regression_data(10)
    metrics = Trainer(model, h.make_args(tmp_path), eval_dataset=data).evaluate()
    x = torch.stack([d["x"] for d in data])
    y = torch.stack([d["labels"] for d in data])
    with torch.no_grad():
        assert metrics["eval_loss"] == pytest.approx(float(model(x, y)["loss"]), rel=1e-6)


def test_evaluate_a_dict_of_datasets_and_a_custom_prefix(h, tmp_path):
    model = h.seeded(h.Classifier)
    a, b = h.classification_data(8, seed=1), h.classification_data(8, seed=2)
    trainer = Trainer(model, h.make_args(tmp_path), eval_dataset={"a": a, "b": b}, compute_metrics=_accuracy)
    metrics = trainer.evaluate()
    assert metrics["eval_a_accuracy"] == pytest.approx(_manual_accuracy(model, a))
    assert metrics["eval_b_accuracy"] == pytest.approx(_manual_accuracy(model, b))
    assert {"eval_a_loss", "eval_b_loss"} <= set(metrics)
    assert "eval_loss" not in metrics

    custom = trainer.evaluate(a, metric_key_prefix="dev")
    assert custom["dev_accuracy"] == metrics["eval_a_accuracy"]
    assert "dev_loss" in custom and "dev_runtime" in custom
    assert not any(k.startswith("eval") for k in custom)


def _eval_steps_of(h, tmp_path, data_size=20, eval_dataset=None, **overrides):
    model = h.seeded(h.Regressor)
    args = h.make_args(tmp_path, **overrides)
    eval_dataset = eval_dataset if eval_dataset is not None else h.regression_data(4, seed=1)
    trainer = Trainer(model, args, train_dataset=h.regression_data(data_size), eval_dataset=eval_dataset)
    trainer.train()
    return trainer, [
        e["step"]
        for e in trainer.state.log_history
        if any(k.startswith("eval_") and k.endswith("_loss") for k in e)
    ]


def test_evaluation_strategy_steps(h, tmp_path):
    _, steps = _eval_steps_of(h, tmp_path, max_steps=10, evaluation_strategy="steps", eval_steps=3)
    assert steps == [3, 6, 9]


def test_evaluation_strategy_epoch(h, tmp_path):
    # 20 samples / batch 4: 5 steps per epoch
    _, steps = _eval_steps_of(h, tmp_path, num_train_epochs=3, evaluation_strategy="epoch")
    assert steps == [5, 10, 15]


def test_eval_delay_in_steps(h, tmp_path):
    _, steps = _eval_steps_of(
        h, tmp_path, max_steps=10, evaluation_strategy="steps", eval_steps=2, eval_delay=5
    )
    assert steps == [6, 8, 10]


def test_eval_delay_in_epochs(h, tmp_path):
    _, steps = _eval_steps_of(h, tmp_path, num_train_epochs=3, evaluation_strategy="epoch", eval_delay=2)
    assert steps == [10, 15]


def test_evaluation_during_training_with_named_datasets(h, tmp_path):
    trainer, _ = _eval_steps_of(
        h,
        tmp_path,
        max_steps=4,
        evaluation_strategy="steps",
        eval_steps=2,
        eval_dataset={"x": h.regression_data(4, seed=1), "y": h.regression_data(4, seed=2)},
    )
    entries = [e for e in trainer.state.log_history if "eval_x_loss" in e or "eval_y_loss" in e]
    assert [(e["step"], "eval_x_loss" in e) for e in entries] == [
        (2, True),
        (2, False),
        (4, True),
        (4, False),
    ]


# ----------------------------------------------------------------------------- predict


def test_predict_returns_numpy_arrays(h, tmp_path):
    model = h.seeded(h.Classifier)
    data = h.classification_data(10)
    out = Trainer(model, h.make_args(tmp_path), compute_metrics=_accuracy).predict(data)
    assert isinstance(out, PredictionOutput)
    assert isinstance(out.predictions, np.ndarray) and out.predictions.shape == (10, 3)
    assert isinstance(out.label_ids, np.ndarray) and out.label_ids.shape == (10,)
    assert out.metrics["test_accuracy"] == pytest.approx(_manual_accuracy(model, data))
    assert "test_loss" in out.metrics and "test_runtime" in out.metrics


def _pad_collator(items):
    """Pads ``input_ids`` with 0 and ``labels`` with -100 to the longest item of the batch."""
    longest = max(len(i["input_ids"]) for i in items)
    ids = torch.zeros(len(items), longest, dtype=torch.long)
    labels = torch.full((len(items), longest), -100, dtype=torch.long)
    for row, item in enumerate(items):
        n = len(item["input_ids"])
        ids[row, :n] = item["input_ids"]
        labels[row, :n] = item["labels"]
    return {"input_ids": ids, "labels": labels}


def _ragged_tokens(vocab, lengths):
    g = torch.Generator().manual_seed(0)
    return [
        {
            "input_ids": torch.randint(1, vocab, (n,), generator=g),
            "labels": torch.randint(0, vocab, (n,), generator=g),
        }
        for n in lengths
    ]


def test_variable_length_outputs_are_padded_with_minus_100(h, tmp_path):
    model = h.seeded(h.TokenModel)
    lengths = [2, 3, 5, 4, 1, 1]  # batches of 2: padded to 3, 5 and 1 by the collator
    data = _ragged_tokens(h.VOCAB, lengths)
    args = h.make_args(tmp_path, per_device_eval_batch_size=2)
    out = Trainer(model, args, data_collator=_pad_collator).predict(data)
    assert out.predictions.shape == (6, 5, 7)
    assert out.label_ids.shape == (6, 5)
    batch_width = [3, 3, 5, 5, 1, 1]
    for row, (n, width) in enumerate(zip(lengths, batch_width)):
        # positions the model saw (its own tokens and the collator's padding) hold its logits
        ids = torch.zeros(width, dtype=torch.long)
        ids[:n] = data[row]["input_ids"]
        with torch.no_grad():
            expected = model(ids[None])["logits"][0].numpy()
        np.testing.assert_allclose(out.predictions[row, :width], expected, atol=1e-6, rtol=0)
        # positions beyond the batch's width were added across batches: exactly -100
        assert (out.predictions[row, width:] == -100).all()
        np.testing.assert_array_equal(out.label_ids[row, :n], data[row]["labels"].numpy())
        assert (out.label_ids[row, n:] == -100).all()


class NestedModel(nn.Module):
    """Returns ``(loss, logits, (hidden_a, hidden_b))``."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x, labels=None):
        logits = self.lin(x)
        hidden = (x * 2, x.sum(-1))
        if labels is None:
            return logits, hidden
        return nn.functional.cross_entropy(logits, labels), logits, hidden


def test_nested_tuple_outputs_stay_tuples(h, tmp_path):
    data = h.classification_data(6)
    out = Trainer(NestedModel(), h.make_args(tmp_path)).predict(data)
    logits, hidden = out.predictions
    assert isinstance(out.predictions, tuple) and isinstance(hidden, tuple)
    x = torch.stack([d["x"] for d in data]).numpy()
    assert logits.shape == (6, 3)
    np.testing.assert_allclose(hidden[0], x * 2, atol=1e-6)
    np.testing.assert_allclose(hidden[1], x.sum(-1), atol=1e-6)


class DictOutputModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x, labels=None):
        logits = self.lin(x)
        out = {"logits": logits, "hidden": x + 1}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def test_dict_outputs_and_ignore_keys(h, tmp_path):
    data = h.classification_data(6)
    x = torch.stack([d["x"] for d in data]).numpy()
    trainer = Trainer(DictOutputModel(), h.make_args(tmp_path))
    both = trainer.predict(data)
    logits, hidden = both.predictions
    assert logits.shape == (6, 3)
    np.testing.assert_allclose(hidden, x + 1, atol=1e-6)
    only_logits = trainer.predict(data, ignore_keys=["hidden"])
    assert isinstance(only_logits.predictions, np.ndarray)
    np.testing.assert_array_equal(only_logits.predictions, logits)


def test_ignore_keys_from_model_config(h, tmp_path):
    model = DictOutputModel()
    model.config = type("Config", (), {"keys_to_ignore_at_inference": ["hidden"]})()
    out = Trainer(model, h.make_args(tmp_path)).predict(h.classification_data(6))
    assert isinstance(out.predictions, np.ndarray) and out.predictions.shape == (6, 3)


def test_include_inputs_for_metrics_passes_the_inputs(h, tmp_path):
    data = h.token_data(6)
    seen = {}

    def metrics(pred: EvalPrediction):
        seen["inputs"] = pred.inputs
        return {}

    args = h.make_args(tmp_path, include_inputs_for_metrics=True)
    Trainer(h.seeded(h.TokenModel), args, compute_metrics=metrics).predict(data)
    np.testing.assert_array_equal(seen["inputs"], torch.stack([d["input_ids"] for d in data]).numpy())

    seen.clear()
    Trainer(h.seeded(h.TokenModel), h.make_args(tmp_path / "no"), compute_metrics=metrics).predict(data)
    assert seen["inputs"] is None


def test_preprocess_logits_for_metrics_is_applied_per_batch(h, tmp_path):
    calls = []

    def to_classes(logits, labels):
        calls.append((tuple(logits.shape), tuple(labels.shape)))
        return logits.argmax(-1)

    model = h.seeded(h.TokenModel)
    data = h.token_data(6)
    out = Trainer(model, h.make_args(tmp_path), preprocess_logits_for_metrics=to_classes).predict(data)
    assert calls == [((4, 6, 7), (4, 6)), ((2, 6, 7), (2, 6))]
    ids = torch.stack([d["input_ids"] for d in data])
    with torch.no_grad():
        expected = model(ids)["logits"].argmax(-1).numpy()
    np.testing.assert_array_equal(out.predictions, expected)


def test_prediction_loss_only(h, tmp_path):
    model = h.seeded(h.Classifier)
    data = h.classification_data(6)
    out = Trainer(model, h.make_args(tmp_path, prediction_loss_only=True)).predict(data)
    assert out.predictions is None and out.label_ids is None
    x = torch.stack([d["x"] for d in data])
    y = torch.stack([d["labels"] for d in data])
    with torch.no_grad():
        assert out.metrics["test_loss"] == pytest.approx(float(model(x, y)["loss"]), abs=1e-6)


def test_predict_without_labels(h, tmp_path):
    model = h.seeded(h.Classifier)
    data = [{"x": d["x"]} for d in h.classification_data(5)]
    out = Trainer(model, h.make_args(tmp_path), compute_metrics=_accuracy).predict(data)
    assert out.label_ids is None
    assert out.predictions.shape == (5, 3)
    assert "test_loss" not in out.metrics and "test_accuracy" not in out.metrics
