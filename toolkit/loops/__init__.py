"""Loops: training (`TrainLoop`) and evaluation (`EvaluationLoop`), plus default step functions."""

from toolkit.loops.steps import (
    LabelSmoother,
    call_model,
    compute_loss,
    count_items,
    loss_from_outputs,
    prediction_step,
)
from toolkit.loops.training import LossTracker, TrainLoop, make_training_step

__all__ = [
    "LabelSmoother",
    "LossTracker",
    "TrainLoop",
    "call_model",
    "compute_loss",
    "count_items",
    "loss_from_outputs",
    "make_training_step",
    "prediction_step",
]
