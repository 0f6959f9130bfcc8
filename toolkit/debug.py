"""Find the module where ``inf`` or ``nan`` first appears (``debug="underflow_overflow"``).

`DebugUnderflowOverflow` puts a forward hook on every module of a model. Each call of
a module's ``forward`` becomes a *frame*: the module's qualified name and class, then
the absolute min and max of its own parameters, of every tensor it received and of
every tensor it returned. The last ``max_frames_to_save`` frames are kept in a ring
buffer. When a weight, input or output holds ``inf`` or ``nan``, the buffer is printed
(the frames leading to the event, the culprit last) and a `ValueError` stops the run:
carrying on would only spread the ``nan``.

Values close to the limits of the format (65504 in fp16) show up in the frames before
they overflow, which helps choosing where to keep fp32.

A second mode prints every frame of chosen batches (``trace_batch_nums``) so that two
batches can be compared; ``abort_after_batch_num`` stops the run after a given batch.

The hooks cost a device-to-host copy per tensor per module call: attach for debugging
only. `remove` (or leaving a ``with`` block) takes every hook off again.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn

__all__ = ["DebugUnderflowOverflow", "UnderflowOverflowError", "detect_overflow"]

logger = logging.getLogger(__name__)


class UnderflowOverflowError(ValueError):
    """Raised when `DebugUnderflowOverflow` stops the run.

    Attributes:
        module_name: Qualified name of the module whose frame found inf/nan (None when
            the run was stopped by ``abort_after_batch_num``).
        batch_number: The batch being run.
        report: The printed text.
    """

    def __init__(self, message: str, module_name: str | None, batch_number: int, report: str) -> None:
        super().__init__(message)
        self.module_name = module_name
        self.batch_number = batch_number
        self.report = report


def _tensors(obj: Any, name: str) -> Iterator[tuple[str, torch.Tensor]]:
    """``(label, tensor)`` for every tensor inside nested tuples, lists and mappings."""
    if isinstance(obj, torch.Tensor):
        yield name, obj
    elif isinstance(obj, Mapping):
        for key, value in obj.items():
            yield from _tensors(value, f"{name}[{key}]")
    elif isinstance(obj, (tuple, list)):
        for i, value in enumerate(obj):
            yield from _tensors(value, f"{name}[{i}]")


def _stats(t: torch.Tensor) -> tuple[float, float, bool, bool] | None:
    """``(abs min, abs max, has nan, has inf)`` with one host sync; None when empty."""
    if t.numel() == 0 or t.dtype == torch.bool or t.is_complex():
        return None
    t = t.detach()
    a = t.abs()
    if t.is_floating_point():
        nan, inf = torch.isnan(t).any(), torch.isinf(t).any()
    else:
        nan = inf = torch.zeros((), dtype=torch.bool, device=t.device)
    packed = torch.stack([a.min().double(), a.max().double(), nan.double(), inf.double()]).tolist()
    return packed[0], packed[1], bool(packed[2]), bool(packed[3])


def detect_overflow(var: torch.Tensor, ctx: str) -> bool:
    """Print whether ``var`` holds ``nan`` or ``inf``; return True if it does.

    For checks inside a ``forward`` between module calls (plain tensor arithmetic
    that no module hook sees).

    Args:
        var: The tensor to check.
        ctx: A label printed with the finding.

    Returns:
        True when ``var`` holds at least one ``nan`` or ``inf``.

    Example:
        >>> detect_overflow(torch.tensor([1.0, float("inf")]), "after scaling")
        after scaling has infs
        True
    """
    found = False
    if torch.isnan(var).any().item():
        print(f"{ctx} has nans")
        found = True
    if torch.isinf(var).any().item():
        print(f"{ctx} has infs")
        found = True
    return found


class DebugUnderflowOverflow:
    """Forward hooks that report the frames leading to the first ``inf``/``nan``.

    Hooks go on at construction (every module, the model itself included) and come off
    with `remove` or at the end of a ``with`` block. The model's own hook fires last in
    each forward pass and counts batches (``batch_number``, from 0). Every forward
    pass counts, evaluation included.

    Detection mode (always on): each module call appends a frame to a buffer of the
    last ``max_frames_to_save``. A frame lists, one line each, ``abs min``, ``abs max``
    and the variable: the module's own parameters by name, ``input[i]`` (positional),
    ``input[name]`` (keyword) and ``output`` / ``output[i]`` / ``output[key]``. The
    first frame holding ``inf`` or ``nan`` makes it print ``Detected inf/nan during
    batch_number=N``, then the buffered frames, then raise `UnderflowOverflowError`
    (a `ValueError`).

    Trace mode: during the batches in ``trace_batch_nums``, every frame is printed as
    it is made and detection does not stop the run (the trace shows the values).
    ``abort_after_batch_num=N`` raises once batch ``N`` has finished.

    Args:
        model: The model to watch.
        max_frames_to_save: Frames kept and printed on detection.
        trace_batch_nums: Batch numbers whose frames are all printed.
        abort_after_batch_num: Stop after this batch (None: never).

    Raises:
        TypeError: If ``model`` is not an `nn.Module`.
        ValueError: If ``max_frames_to_save < 1``.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 2))
        >>> with DebugUnderflowOverflow(model) as debug:
        ...     _ = model(torch.ones(1, 2))
        >>> debug.batch_number, len(model[0]._forward_hooks)
        (1, 0)
    """

    def __init__(
        self,
        model: nn.Module,
        max_frames_to_save: int = 21,
        trace_batch_nums: list[int] | None = None,
        abort_after_batch_num: int | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"DebugUnderflowOverflow: model must be an nn.Module; got {type(model).__name__}")
        if max_frames_to_save < 1:
            raise ValueError(
                f"DebugUnderflowOverflow: max_frames_to_save must be >= 1; got {max_frames_to_save}"
            )
        self.model = model
        self.max_frames_to_save = max_frames_to_save
        self.trace_batch_nums = set(trace_batch_nums or ())
        self.abort_after_batch_num = abort_after_batch_num
        self.frames: collections.deque[str] = collections.deque(maxlen=max_frames_to_save)
        self.batch_number = 0
        self.total_calls = 0
        self.detected_overflow = False
        self.report: str | None = None
        self._names = {id(m): name for name, m in model.named_modules()}
        self._handles = [m.register_forward_hook(self._hook, with_kwargs=True) for m in model.modules()]
        self._new_batch_frame()

    # ------------------------------------------------------------ lifecycle
    def remove(self) -> None:
        """Takes every hook off the model (idempotent)."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    @property
    def attached(self) -> bool:
        """Whether the hooks are on."""
        return bool(self._handles)

    def __enter__(self) -> DebugUnderflowOverflow:
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()

    # ------------------------------------------------------------ frames
    def _label(self, module: nn.Module) -> str:
        return self._names.get(id(module)) or "<model>"

    def _new_batch_frame(self) -> None:
        line = f"{' Starting batch number=' + str(self.batch_number) + ' ':*^72}"
        self.frames.append(line)
        if self.batch_number in self.trace_batch_nums:
            print(line)

    def _frame(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> tuple[str, bool]:
        lines = [
            f"{self._label(module)} {type(module).__name__}",
            f"{'abs min':>8}  {'abs max':>8}  variable",
        ]
        bad = False
        variables = [(pname, p) for pname, p in module.named_parameters(recurse=False)]
        variables += list(_tensors(args, "input"))
        variables += list(_tensors(kwargs, "input"))
        variables += [
            ("output" if isinstance(output, torch.Tensor) else n, t) for n, t in _tensors(output, "output")
        ]
        for var_name, tensor in variables:
            stats = _stats(tensor)
            if stats is None:
                continue
            lo, hi, nan, inf = stats
            flags = (" nan" if nan else "") + (" inf" if inf else "")
            bad = bad or nan or inf
            lines.append(f"{lo:8.2e}  {hi:8.2e}  {var_name}{flags}")
        return "\n".join(lines), bad

    def _hook(self, module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        tracing = self.batch_number in self.trace_batch_nums
        self.total_calls += 1
        frame, bad = self._frame(module, args, kwargs, output)
        self.frames.append(frame)
        if tracing:
            print(frame)
        if bad and not tracing:
            self.detected_overflow = True
            name = self._label(module)
            self.report = "\n\n".join(
                [f"Detected inf/nan during batch_number={self.batch_number}", *self.frames]
            )
            print(self.report)
            raise UnderflowOverflowError(
                f"DebugUnderflowOverflow: inf/nan detected in {name!r} ({type(module).__name__}) during "
                f"batch_number={self.batch_number}; the frames leading to it are printed above this traceback.",
                module_name=name,
                batch_number=self.batch_number,
                report=self.report,
            )
        if module is self.model:  # the model's hook fires last: this batch is done
            if tracing:
                self.frames.clear()
            self.batch_number += 1
            if self.abort_after_batch_num is not None and self.batch_number > self.abort_after_batch_num:
                raise UnderflowOverflowError(
                    f"DebugUnderflowOverflow: stopping after batch {self.batch_number - 1} as asked by "
                    f"abort_after_batch_num={self.abort_after_batch_num}",
                    module_name=None,
                    batch_number=self.batch_number - 1,
                    report="",
                )
            self._new_batch_frame()
