"""The callback contract: `TrainerCallback` events and the `CallbackHandler` that fires them.

Events and the order the loops fire them in are documented in ``docs/callbacks.md``.
A callback receives ``(args, state, control, **kwargs)`` where kwargs carry the
objects registered with the handler (model, tokenizer, optimizer, lr_scheduler,
train_dataloader, eval_dataloader) plus event-specific values (``metrics``, ``logs``).
Returning a `TrainerControl` replaces the current one; returning ``None`` keeps it.
An event method marked with `without_event_objects` is called without the registered
objects (a keyword dict built for every call is the main cost of an event).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any, TypeVar

from toolkit.state import TrainerControl, TrainerState

__all__ = ["TrainerCallback", "CallbackHandler", "EVENTS", "without_event_objects"]

logger = logging.getLogger(__name__)

_F = TypeVar("_F")

EVENTS = (
    "on_init_end",
    "on_train_begin",
    "on_train_end",
    "on_epoch_begin",
    "on_epoch_end",
    "on_step_begin",
    "on_substep_end",
    "on_step_end",
    "on_evaluate",
    "on_predict",
    "on_save",
    "on_log",
    "on_prediction_step",
)


class TrainerCallback:
    """Base class: override the events you need; every default does nothing.

    Example:
        >>> class CountSteps(TrainerCallback):
        ...     def __init__(self):
        ...         self.n = 0
        ...     def on_step_end(self, args, state, control, **kwargs):
        ...         self.n += 1
        >>> cb = CountSteps()
        >>> h = CallbackHandler([cb])
        >>> _ = h.on_step_end(None, TrainerState(), TrainerControl())
        >>> cb.n
        1
    """

    def on_init_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """After the trainer's constructor finished."""

    def on_train_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """At the beginning of training."""

    def on_train_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """At the end of training."""

    def on_epoch_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """At the beginning of an epoch."""

    def on_epoch_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """At the end of an epoch."""

    def on_step_begin(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """Before each micro-step that starts a new optimizer step (an accumulation window)."""

    def on_substep_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """After each micro-step inside an accumulation window, except the last one."""

    def on_step_end(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """After each optimizer step (``state.global_step`` already advanced)."""

    def on_evaluate(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """After an evaluation; ``kwargs["metrics"]`` holds its metrics."""

    def on_predict(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """After a successful prediction; ``kwargs["metrics"]`` holds its metrics."""

    def on_save(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """After a checkpoint save."""

    def on_log(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """After logging; ``kwargs["logs"]`` holds what was logged."""

    def on_prediction_step(self, args, state: TrainerState, control: TrainerControl, **kwargs):
        """After each prediction (evaluation) batch."""


def without_event_objects(method: _F) -> _F:
    """Mark an event method that reads none of the handler's objects (model, optimizer...).

    `CallbackHandler` then calls it with ``(args, state, control)`` plus only the
    event's own keywords (``logs``, ``metrics``), skipping the copy of the objects into
    a keyword dict, which costs more than most event bodies. The method must still
    accept ``**kwargs``: other callers may pass them. The mark is read when the callback
    is registered; an override in a subclass is not marked unless decorated again.

    Example:
        >>> class StepCounter(TrainerCallback):
        ...     n = 0
        ...     @without_event_objects
        ...     def on_step_end(self, args, state, control, **kwargs):
        ...         self.n += 1
        >>> cb = StepCounter()
        >>> _ = CallbackHandler([cb], model="unused").on_step_end(None, TrainerState(), TrainerControl())
        >>> cb.n
        1
    """
    method._without_event_objects = True  # type: ignore[attr-defined]
    return method


def _event_impl(cb: TrainerCallback, event: str) -> Any:
    """The function ``cb`` runs for ``event`` (its own attribute, else its class's), read
    without the instance's attribute hooks."""
    own = vars(cb)
    return own[event] if event in own else getattr(type(cb), event, None)


def _skips_objects(cb: TrainerCallback, event: str) -> bool:
    return bool(getattr(_event_impl(cb, event), "_without_event_objects", False))


def _overrides(cb: TrainerCallback, event: str) -> bool:
    return _event_impl(cb, event) is not getattr(TrainerCallback, event)


class CallbackHandler:
    """Holds callbacks and fires events on them, in registration order.

    Events are only dispatched to callbacks that override them, so an event nobody
    listens to costs one attribute lookup and one empty-tuple check.

    Args:
        callbacks: callbacks (instances or classes, which are instantiated).
        **objects: values passed to every event as keyword arguments
            (e.g. ``model=...``, ``optimizer=...``); update them with `set_objects`.
    """

    def __init__(self, callbacks: Iterable[TrainerCallback | type] = (), **objects: Any) -> None:
        self.callbacks: list[TrainerCallback] = []
        self.objects: dict[str, Any] = dict(objects)
        # event -> ((callback, called without the objects), ...) for the callbacks overriding it
        self._listeners: dict[str, tuple[tuple[TrainerCallback, bool], ...]] = dict.fromkeys(EVENTS, ())
        for cb in callbacks:
            self.add_callback(cb)

    # registration -------------------------------------------------------
    def _refresh(self) -> None:
        self._listeners = {
            e: tuple((cb, _skips_objects(cb, e)) for cb in self.callbacks if _overrides(cb, e)) for e in EVENTS
        }

    def add_callback(self, callback: TrainerCallback | type) -> None:
        """Add a callback instance, or a callback class to instantiate."""
        cb = callback() if isinstance(callback, type) else callback
        if not isinstance(cb, TrainerCallback):
            raise TypeError(
                f"callbacks must be TrainerCallback instances or subclasses, got {type(cb).__name__}"
            )
        cb_class = type(cb)
        if any(type(c) is cb_class for c in self.callbacks):
            logger.warning(
                "A callback of type %s is already registered; adding another one.", cb_class.__name__
            )
        self.callbacks.append(cb)
        self._refresh()

    def pop_callback(self, callback: TrainerCallback | type) -> TrainerCallback | None:
        """Remove and return a callback (by instance, or the first of a class)."""
        for i, cb in enumerate(self.callbacks):
            if cb is callback or (isinstance(callback, type) and type(cb) is callback):
                self.callbacks.pop(i)
                self._refresh()
                return cb
        return None

    def remove_callback(self, callback: TrainerCallback | type) -> None:
        """Remove a callback (by instance, or the first of a class)."""
        self.pop_callback(callback)

    @property
    def callback_list(self) -> str:
        """Names of the registered callbacks, one per line."""
        return "\n".join(type(cb).__name__ for cb in self.callbacks)

    def set_objects(self, **objects: Any) -> None:
        """Set the objects passed to every event (model, optimizer, dataloaders...)."""
        self.objects.update(objects)

    def has_listeners(self, event: str) -> bool:
        """True when at least one callback overrides ``event``."""
        return bool(self._listeners[event])

    # dispatch ----------------------------------------------------------
    def call_event(self, event: str, args, state: TrainerState, control: TrainerControl, **kwargs):
        """Fire ``event`` on every listening callback and return the resulting control."""
        listeners = self._listeners[event]
        if not listeners:
            return control
        payload = {**self.objects, **kwargs} if kwargs else self.objects
        for cb, bare in listeners:
            method = getattr(cb, event)
            if bare:
                result = method(args, state, control, **kwargs) if kwargs else method(args, state, control)
            else:
                result = method(args, state, control, **payload)
            if result is not None:
                control = result
        return control

    def on_init_end(self, args, state, control):
        return self.call_event("on_init_end", args, state, control)

    def on_train_begin(self, args, state, control):
        control.should_training_stop = False
        return self.call_event("on_train_begin", args, state, control)

    def on_train_end(self, args, state, control):
        return self.call_event("on_train_end", args, state, control)

    def on_epoch_begin(self, args, state, control):
        control.should_epoch_stop = False
        return self.call_event("on_epoch_begin", args, state, control)

    def on_epoch_end(self, args, state, control):
        return self.call_event("on_epoch_end", args, state, control)

    def on_step_begin(self, args, state, control):
        control.should_log = False
        control.should_evaluate = False
        control.should_save = False
        return self.call_event("on_step_begin", args, state, control)

    def on_substep_end(self, args, state, control):
        return self.call_event("on_substep_end", args, state, control)

    def on_step_end(self, args, state, control):
        return self.call_event("on_step_end", args, state, control)

    def on_evaluate(self, args, state, control, metrics):
        control.should_evaluate = False
        return self.call_event("on_evaluate", args, state, control, metrics=metrics)

    def on_predict(self, args, state, control, metrics):
        return self.call_event("on_predict", args, state, control, metrics=metrics)

    def on_save(self, args, state, control):
        control.should_save = False
        return self.call_event("on_save", args, state, control)

    def on_log(self, args, state, control, logs):
        control.should_log = False
        return self.call_event("on_log", args, state, control, logs=logs)

    def on_prediction_step(self, args, state, control):
        return self.call_event("on_prediction_step", args, state, control)
