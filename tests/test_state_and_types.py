"""TrainerState / TrainerControl plain data and the shared value types."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolkit import EvalPrediction, IntervalStrategy, SchedulerType, TrainerControl, TrainerState
from toolkit.types import LossNormalization, OptimizerNames


def test_trainer_state_json_round_trip(tmp_path) -> None:
    state = TrainerState(global_step=7, epoch=1.5, max_steps=10, best_metric=0.25,
                         best_model_checkpoint="out/checkpoint-6")
    state.log_history.append({"loss": 0.5, "step": 5})
    path = tmp_path / "trainer_state.json"
    state.save_to_json(str(path))
    data = json.loads(path.read_text())
    for key in ("global_step", "epoch", "log_history", "best_metric", "best_model_checkpoint", "total_flos"):
        assert key in data
    again = TrainerState.load_from_json(str(path))
    assert again == state


def test_trainer_state_ignores_unknown_keys() -> None:
    text = json.dumps({"global_step": 3, "some_future_field": 1})
    assert TrainerState.from_json_string(text).global_step == 3


def test_control_resets() -> None:
    c = TrainerControl(should_log=True, should_evaluate=True, should_save=True,
                       should_epoch_stop=True, should_training_stop=True)
    c._new_step()
    assert not (c.should_log or c.should_evaluate or c.should_save)
    c._new_epoch()
    assert not c.should_epoch_stop and c.should_training_stop
    c._new_training()
    assert not c.should_training_stop
    c2 = TrainerControl()
    c2.load_state_dict({"should_save": True})
    assert c2.should_save and c2.state_dict()["should_save"]


def test_eval_prediction_unpacks_like_a_tuple() -> None:
    preds, labels = EvalPrediction(np.array([1]), np.array([2]))
    assert preds[0] == 1 and labels[0] == 2
    with_inputs = EvalPrediction(np.array([1]), np.array([2]), inputs=np.array([3]))
    assert len(with_inputs) == 3 and with_inputs[2][0] == 3


def test_string_enums_accept_both_forms_and_list_choices() -> None:
    assert IntervalStrategy("steps") is IntervalStrategy.STEPS
    assert IntervalStrategy.EPOCH == "epoch"
    assert SchedulerType("reduce_lr_on_plateau") is SchedulerType.REDUCE_ON_PLATEAU
    assert OptimizerNames("adamw_torch") is OptimizerNames.ADAMW_TORCH
    assert LossNormalization("micro_batch") is LossNormalization.MICRO_BATCH
    with pytest.raises(ValueError, match="'no', 'steps', 'epoch'"):
        IntervalStrategy("sometimes")
