"""Model output shapes the facade accepts, missing losses, label smoothing and label names."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

from toolkit import Trainer


class TupleModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 3)

    def forward(self, x, labels=None):
        logits = self.lin(x)
        if labels is None:
            return (logits,)
        return nn.functional.cross_entropy(logits, labels), logits


class DictModel(TupleModel):
    def forward(self, x, labels=None):
        logits = self.lin(x)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


@dataclasses.dataclass
class ClassifierOutput:
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None


class DataclassModel(TupleModel):
    def forward(self, x, labels=None):
        logits = self.lin(x)
        loss = nn.functional.cross_entropy(logits, labels) if labels is not None else None
        return ClassifierOutput(loss=loss, logits=logits)


class NoLossDictModel(TupleModel):
    def forward(self, x, labels=None):
        return {"logits": self.lin(x)}


class NoLossDataclassModel(TupleModel):
    def forward(self, x, labels=None):
        return ClassifierOutput(logits=self.lin(x))


@pytest.mark.parametrize("model_cls", [TupleModel, DictModel, DataclassModel])
def test_tuple_dict_and_dataclass_outputs_train_and_predict(h, tmp_path, model_cls):
    torch.manual_seed(0)
    model = model_cls()
    before = h.weights(model)
    data = h.classification_data(16)
    trainer = Trainer(model, h.make_args(tmp_path, max_steps=3, logging_steps=1), train_dataset=data)
    out = trainer.train()
    assert out.global_step == 3
    assert h.weights_differ(before, h.weights(model))
    losses = h.train_losses(trainer.state.log_history)
    assert [s for s, _ in losses] == [1, 2, 3]

    pred = trainer.predict(data)
    x = torch.stack([d["x"] for d in data])
    with torch.no_grad():
        expected = model.lin(x).numpy()
    assert isinstance(pred.predictions, np.ndarray)
    np.testing.assert_allclose(pred.predictions, expected, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(pred.label_ids, np.array([int(d["labels"]) for d in data]))
    with torch.no_grad():
        expected_loss = nn.functional.cross_entropy(model.lin(x), torch.stack([d["labels"] for d in data]))
    assert pred.metrics["test_loss"] == pytest.approx(float(expected_loss), abs=1e-6)


class NoLossTupleModel(TupleModel):
    def forward(self, x, labels=None):
        return (self.lin(x),)


@pytest.mark.parametrize("model_cls", [NoLossDictModel, NoLossDataclassModel, NoLossTupleModel])
def test_model_without_loss_gives_a_clear_error(h, tmp_path, model_cls):
    trainer = Trainer(model_cls(), h.make_args(tmp_path, max_steps=2), train_dataset=h.classification_data(8))
    before = h.weights(trainer.model)
    with pytest.raises(ValueError, match="did not return a loss|holds no loss|not a scalar loss"):
        trainer.train()
    assert not h.weights_differ(before, h.weights(trainer.model), atol=0)


def test_label_smoothing_follows_the_formula(h, tmp_path):
    torch.manual_seed(0)
    model = DictModel()
    data = h.classification_data(12)
    eps = 0.2
    trainer = Trainer(model, h.make_args(tmp_path, label_smoothing_factor=eps), eval_dataset=data)
    x = torch.stack([d["x"] for d in data])
    y = torch.stack([d["labels"] for d in data])
    with torch.no_grad():
        logp = torch.log_softmax(model.lin(x), dim=-1)
    nll = -logp.gather(1, y[:, None]).mean()
    uniform = -logp.mean()
    expected = (1 - eps) * nll + eps * uniform
    plain = nll

    batch = {"x": x, "labels": y}
    with torch.no_grad():
        got = trainer.compute_loss(model, batch)
    assert float(got) == pytest.approx(float(expected), abs=1e-6)
    assert float(got) != pytest.approx(float(plain), abs=1e-3)
    # evaluation uses the same smoothed loss
    assert trainer.evaluate()["eval_loss"] == pytest.approx(float(expected), abs=1e-6)


def test_label_smoothing_ignores_padded_tokens(h, tmp_path):
    torch.manual_seed(0)
    model = h.TokenModel()
    data = h.token_data(8)
    eps = 0.1
    trainer = Trainer(model, h.make_args(tmp_path, label_smoothing_factor=eps))
    ids = torch.stack([d["input_ids"] for d in data])
    labels = torch.stack([d["labels"] for d in data])
    with torch.no_grad():
        logits = model(ids)["logits"]
        got = trainer.compute_loss(model, {"input_ids": ids, "labels": labels})
    expected = nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), label_smoothing=eps, ignore_index=-100
    )
    assert float(got) == pytest.approx(float(expected), abs=1e-6)


class TargetModel(nn.Module):
    """Takes its labels as ``target``: found only through ``label_names``."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 1)

    def forward(self, x, target=None):
        out = self.lin(x).squeeze(-1)
        if target is None:
            return {"logits": out}
        return {"loss": nn.functional.mse_loss(out, target), "logits": out}


def test_custom_label_names(h, tmp_path):
    torch.manual_seed(0)
    model = TargetModel()
    data = [{"x": d["x"], "target": d["labels"], "unused": 1} for d in h.regression_data(12)]
    args = h.make_args(tmp_path, label_names=["target"], max_steps=2)
    trainer = Trainer(model, args, train_dataset=data, eval_dataset=data)
    assert trainer.label_names == ["target"]
    trainer.train()
    pred = trainer.predict(data)
    np.testing.assert_allclose(pred.label_ids, np.array([float(d["target"]) for d in data]), atol=0)
    assert "test_loss" in pred.metrics
    # without label_names the trainer does not know `target` is a label: no label ids
    plain = Trainer(TargetModel(), h.make_args(tmp_path / "plain"))
    assert plain.label_names == ["labels"]
    assert plain.predict(data).label_ids is None


class TwoLabelModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 2)

    def forward(self, x, start_positions=None, end_positions=None):
        start, end = self.lin(x).unbind(-1)
        if start_positions is None:
            return {"start_logits": start, "end_logits": end}
        loss = nn.functional.mse_loss(start, start_positions) + nn.functional.mse_loss(end, end_positions)
        return {"loss": loss, "start_logits": start, "end_logits": end}


def test_question_answering_label_names_are_detected(h, tmp_path):
    trainer = Trainer(TwoLabelModel(), h.make_args(tmp_path))
    assert trainer.label_names == ["start_positions", "end_positions"]
    data = [
        {"x": d["x"], "start_positions": d["labels"], "end_positions": -d["labels"]}
        for d in h.regression_data(6)
    ]
    pred = trainer.predict(data)
    starts, ends = pred.label_ids
    np.testing.assert_array_equal(starts, -ends)
    assert isinstance(pred.predictions, tuple) and len(pred.predictions) == 2
