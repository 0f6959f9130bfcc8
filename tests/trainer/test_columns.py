"""``remove_unused_columns`` through the facade's dataloaders."""

from __future__ import annotations

import logging

import pytest

from toolkit import Trainer
from toolkit.data import default_data_collator


class KeyRecorder:
    """A collator that records the keys it is given, then drops ``idx`` and ``text``."""

    def __init__(self) -> None:
        self.keys: list[set[str]] = []

    def __call__(self, items):
        self.keys.append(set(items[0]))
        return default_data_collator(
            [{k: v for k, v in i.items() if k not in ("idx", "text")} for i in items]
        )


def _with_extras(data):
    return [{**d, "idx": i, "text": f"sample {i}"} for i, d in enumerate(data)]


def _drop_messages(caplog, description):
    return [
        r for r in caplog.records if "Dropping column" in r.getMessage() and description in r.getMessage()
    ]


def test_extra_columns_are_dropped_and_logged_once_per_dataloader(h, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="toolkit")
    recorder = KeyRecorder()
    data = _with_extras(h.regression_data(16))
    trainer = Trainer(
        h.seeded(h.Regressor),
        h.make_args(tmp_path, max_steps=6),
        data_collator=recorder,
        train_dataset=data,
        eval_dataset=data,
    )
    trainer.train()
    assert len(recorder.keys) == 6
    assert all(keys == {"x", "labels"} for keys in recorder.keys)
    training = _drop_messages(caplog, "training")
    assert len(training) == 1
    assert "idx" in training[0].getMessage() and "text" in training[0].getMessage()

    trainer.evaluate()
    assert len(_drop_messages(caplog, "evaluation")) == 1
    assert all(keys == {"x", "labels"} for keys in recorder.keys)


def test_default_collator_trains_on_data_with_string_columns(h, tmp_path):
    data = _with_extras(h.regression_data(8))
    out = Trainer(h.seeded(h.Regressor), h.make_args(tmp_path, max_steps=2), train_dataset=data).train()
    assert out.global_step == 2


def test_nothing_the_model_takes_is_an_error(h, tmp_path):
    data = [{"features": d["x"], "target": d["labels"]} for d in h.regression_data(8)]
    trainer = Trainer(h.seeded(h.Regressor), h.make_args(tmp_path, max_steps=2), train_dataset=data)
    with pytest.raises(ValueError, match="remove_unused_columns") as info:
        trainer.train()
    message = str(info.value)
    assert "features" in message and "'x'" in message
    assert trainer.state.global_step == 0


def test_remove_unused_columns_false_passes_everything(h, tmp_path):
    recorder = KeyRecorder()
    data = _with_extras(h.regression_data(16))
    args = h.make_args(tmp_path, max_steps=2, remove_unused_columns=False)
    trainer = Trainer(
        h.seeded(h.Regressor), args, data_collator=recorder, train_dataset=data, eval_dataset=data
    )
    trainer.train()
    trainer.evaluate()
    assert recorder.keys and all(keys == {"x", "labels", "idx", "text"} for keys in recorder.keys)


def test_remove_unused_columns_false_reaches_the_model(h, tmp_path):
    data = [{**d, "idx": i} for i, d in enumerate(h.regression_data(8))]
    args = h.make_args(tmp_path, max_steps=1, remove_unused_columns=False)
    with pytest.raises(TypeError, match="idx"):
        Trainer(h.seeded(h.Regressor), args, train_dataset=data).train()
