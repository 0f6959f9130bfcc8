"""Callbacks: the event contract, the default flow, progress display and early stopping."""

from toolkit.callbacks.base import EVENTS, CallbackHandler, TrainerCallback
from toolkit.callbacks.early_stopping import EarlyStoppingCallback
from toolkit.callbacks.flow import DefaultFlowCallback
from toolkit.callbacks.progress import PrinterCallback, ProgressCallback

__all__ = [
    "EVENTS",
    "CallbackHandler",
    "TrainerCallback",
    "DefaultFlowCallback",
    "ProgressCallback",
    "PrinterCallback",
    "EarlyStoppingCallback",
]
