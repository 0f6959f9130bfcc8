"""Callbacks: the event contract, the default flow, progress display and early stopping."""

from toolkit.callbacks.base import EVENTS, CallbackHandler, TrainerCallback, without_event_objects
from toolkit.callbacks.early_stopping import EarlyStoppingCallback
from toolkit.callbacks.flow import DefaultFlowCallback
from toolkit.callbacks.progress import PrinterCallback, ProgressCallback

__all__ = [
    "EVENTS",
    "CallbackHandler",
    "TrainerCallback",
    "without_event_objects",
    "DefaultFlowCallback",
    "ProgressCallback",
    "PrinterCallback",
    "EarlyStoppingCallback",
]
