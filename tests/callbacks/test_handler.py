"""CallbackHandler (toolkit/callbacks/base.py): registration and event dispatch."""

from __future__ import annotations

import logging

import pytest

from toolkit.callbacks import (
    EVENTS,
    CallbackHandler,
    DefaultFlowCallback,
    PrinterCallback,
    ProgressCallback,
    TrainerCallback,
    without_event_objects,
)
from toolkit.state import TrainerControl, TrainerState


class Recorder(TrainerCallback):
    """Records (name, event, kwargs) for every event into a shared journal."""

    def __init__(self, name: str = "rec", journal: list | None = None) -> None:
        self.name = name
        self.journal = journal if journal is not None else []


def _make_recording(event):
    def handler(self, args, state, control, **kwargs):
        self.journal.append((self.name, event, kwargs))

    return handler


for _event in EVENTS:
    setattr(Recorder, _event, _make_recording(_event))


class StepOnly(TrainerCallback):
    def __init__(self):
        self.steps = 0

    def on_step_end(self, args, state, control, **kwargs):
        self.steps += 1


class OtherStepOnly(StepOnly):
    pass


def call(handler: CallbackHandler, event: str, control: TrainerControl | None = None):
    control = control or TrainerControl()
    state = TrainerState()
    if event in ("on_evaluate", "on_predict"):
        return getattr(handler, event)(None, state, control, metrics={"m": 1})
    if event == "on_log":
        return handler.on_log(None, state, control, logs={"loss": 1.0})
    return getattr(handler, event)(None, state, control)


def test_dispatch_in_registration_order_for_every_event():
    journal: list = []
    handler = CallbackHandler([Recorder("a", journal), Recorder("b", journal), Recorder("c", journal)])
    for event in EVENTS:
        journal.clear()
        call(handler, event)
        assert [(name, ev) for name, ev, _ in journal] == [("a", event), ("b", event), ("c", event)]


def test_only_overriders_receive_an_event():
    step_only = StepOnly()
    journal: list = []
    handler = CallbackHandler([step_only, Recorder("r", journal)])
    assert handler.has_listeners("on_step_end") and handler.has_listeners("on_log")
    call(handler, "on_log")
    assert step_only.steps == 0 and [e for _, e, _ in journal] == ["on_log"]
    call(handler, "on_step_end")
    assert step_only.steps == 1

    only = CallbackHandler([StepOnly()])
    assert not only.has_listeners("on_log")
    control = TrainerControl()
    assert call(only, "on_log", control) is control  # nobody listens: control comes back unchanged


def test_instance_attribute_override_is_dispatched():
    cb = TrainerCallback()
    seen = []
    cb.on_save = lambda args, state, control, **kw: seen.append("saved")
    handler = CallbackHandler([cb])
    call(handler, "on_save")
    assert seen == ["saved"]


def test_returned_control_replaces_the_current_one():
    replacement = TrainerControl(should_training_stop=True)
    seen_by_second = []

    class Replacer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            return replacement

    class Observer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            seen_by_second.append(control)  # returns None: keeps the control it got

    handler = CallbackHandler([Replacer(), Observer()])
    original = TrainerControl()
    result = handler.on_step_end(None, TrainerState(), original)
    assert result is replacement and seen_by_second == [replacement]
    assert not original.should_training_stop


def test_handler_resets_flags_before_events():
    handler = CallbackHandler([StepOnly()])
    control = TrainerControl(should_log=True, should_evaluate=True, should_save=True)
    control = handler.on_step_begin(None, TrainerState(), control)
    assert not (control.should_log or control.should_evaluate or control.should_save)
    control.should_log = True
    control = handler.on_log(None, TrainerState(), control, logs={})
    assert not control.should_log
    control.should_evaluate = True
    control = handler.on_evaluate(None, TrainerState(), control, metrics={})
    assert not control.should_evaluate
    control.should_save = True
    control = handler.on_save(None, TrainerState(), control)
    assert not control.should_save
    control.should_training_stop = True
    control = handler.on_train_begin(None, TrainerState(), control)
    assert not control.should_training_stop
    control.should_epoch_stop = True
    control = handler.on_epoch_begin(None, TrainerState(), control)
    assert not control.should_epoch_stop


def test_objects_are_passed_as_kwargs():
    model, optimizer = object(), object()
    rec = Recorder()
    handler = CallbackHandler([rec], model=model, optimizer=optimizer)
    call(handler, "on_step_end")
    kwargs = rec.journal[-1][2]
    assert kwargs["model"] is model and kwargs["optimizer"] is optimizer

    new_loader = [1, 2]
    handler.set_objects(eval_dataloader=new_loader)
    call(handler, "on_log")
    kwargs = rec.journal[-1][2]
    assert kwargs["eval_dataloader"] is new_loader and kwargs["model"] is model
    assert kwargs["logs"] == {"loss": 1.0}
    call(handler, "on_evaluate")
    assert rec.journal[-1][2]["metrics"] == {"m": 1}
    assert "logs" not in rec.journal[-1][2]  # event kwargs do not leak into later events


def test_add_instances_and_classes():
    handler = CallbackHandler([DefaultFlowCallback])
    assert isinstance(handler.callbacks[0], DefaultFlowCallback)
    printer = PrinterCallback()
    handler.add_callback(printer)
    assert handler.callbacks[1] is printer
    assert handler.callback_list == "DefaultFlowCallback\nPrinterCallback"
    assert handler.has_listeners("on_log")


def test_add_rejects_non_callbacks():
    with pytest.raises(TypeError, match="TrainerCallback"):
        CallbackHandler([object()])
    with pytest.raises(TypeError, match="TrainerCallback"):
        CallbackHandler().add_callback(int)


def test_adding_a_duplicate_class_warns(caplog):
    handler = CallbackHandler([StepOnly()])
    with caplog.at_level(logging.WARNING, logger="toolkit.callbacks.base"):
        handler.add_callback(StepOnly)
    assert "StepOnly" in caplog.text and len(handler.callbacks) == 2


def test_pop_by_class_takes_the_first_exact_match():
    first, second, sub = StepOnly(), StepOnly(), OtherStepOnly()
    handler = CallbackHandler([sub, first, second])
    assert handler.pop_callback(StepOnly) is first  # a subclass instance is not a match
    assert handler.callbacks == [sub, second]
    assert handler.pop_callback(ProgressCallback) is None


def test_pop_and_remove_by_instance_update_dispatch():
    a, b = StepOnly(), StepOnly()
    handler = CallbackHandler([a, b])
    assert handler.pop_callback(b) is b
    call(handler, "on_step_end")
    assert (a.steps, b.steps) == (1, 0)
    handler.remove_callback(a)
    assert handler.callbacks == [] and not handler.has_listeners("on_step_end")
    handler.remove_callback(a)  # absent: no error
    handler.add_callback(b)
    call(handler, "on_step_end")
    assert b.steps == 1


def test_remove_by_class():
    handler = CallbackHandler([DefaultFlowCallback(), PrinterCallback()])
    handler.remove_callback(DefaultFlowCallback)
    assert [type(cb) for cb in handler.callbacks] == [PrinterCallback]


class _Bare(TrainerCallback):
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict]] = []

    @without_event_objects
    def on_step_end(self, args, state, control, **kwargs):
        self.seen.append(("on_step_end", kwargs))

    @without_event_objects
    def on_log(self, args, state, control, **kwargs):
        self.seen.append(("on_log", kwargs))

    def on_save(self, args, state, control, **kwargs):
        self.seen.append(("on_save", kwargs))


def test_marked_events_get_only_their_own_keywords():
    cb, plain = _Bare(), Recorder()
    handler = CallbackHandler([cb, plain], model="m", optimizer="o")
    state, control = TrainerState(), TrainerControl()
    handler.on_step_end(None, state, control)
    handler.on_log(None, state, control, logs={"loss": 1.0})
    handler.on_save(None, state, control)
    # marked: no objects, but the event's own value (logs) still arrives
    assert cb.seen == [
        ("on_step_end", {}),
        ("on_log", {"logs": {"loss": 1.0}}),
        ("on_save", {"model": "m", "optimizer": "o"}),  # not marked: every object
    ]
    # the other callback of the same events is unaffected by its neighbour's mark
    assert [kw for _, event, kw in plain.journal if event == "on_step_end"] == [{"model": "m", "optimizer": "o"}]


def test_an_unmarked_override_of_a_marked_event_gets_the_objects():
    class Sub(_Bare):
        def on_step_end(self, args, state, control, **kwargs):
            self.seen.append(("sub", kwargs))

    cb = Sub()
    CallbackHandler([cb], model="m").on_step_end(None, TrainerState(), TrainerControl())
    assert cb.seen == [("sub", {"model": "m"})]


def test_builtin_per_step_callbacks_still_act_without_objects():
    flow = DefaultFlowCallback()
    handler = CallbackHandler([flow], model="m")
    args = type("A", (), {"logging_strategy": "steps", "evaluation_strategy": "no", "save_strategy": "steps",
                          "logging_first_step": False, "eval_delay": 0})()
    state = TrainerState(global_step=4, max_steps=10, logging_steps=2, save_steps=4)
    control = handler.on_step_end(args, state, TrainerControl())
    assert control.should_log and control.should_save and not control.should_training_stop
