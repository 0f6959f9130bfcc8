"""How the model is executed, beside its number format: activation checkpointing and
``torch.compile`` for training; a whole-model half-precision copy and TorchScript
tracing for inference.

The training transforms change the model in place (so that saving, resuming and the
optimizer keep seeing the same module and parameter names). The inference transforms
return a new module and never touch the training weights.
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from toolkit.precision.base import _DTYPES, _cast_floats

__all__ = [
    "COMPILE_MODES",
    "enable_gradient_checkpointing",
    "compile_module",
    "half_copy",
    "trace_for_inference",
    "inference_model",
]

logger = logging.getLogger(__name__)

#: Accepted ``torch_compile_mode`` values (None: torch's default).
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


# ----------------------------------------------------------------------------- training


def enable_gradient_checkpointing(model: nn.Module) -> None:
    """``gradient_checkpointing``: recompute activations during backward to save memory.

    Calls the model's own ``gradient_checkpointing_enable()`` (transformers models have it);
    only the model knows which blocks to checkpoint.

    Raises:
        ValueError: when the model has no ``gradient_checkpointing_enable`` method.
    """
    enable = getattr(model, "gradient_checkpointing_enable", None)
    if not callable(enable):
        raise ValueError(
            f"gradient_checkpointing=True: the model ({type(model).__name__}) has no "
            "`gradient_checkpointing_enable()` method. Add one that wraps its blocks with "
            "`torch.utils.checkpoint.checkpoint` (transformers models have it), or set gradient_checkpointing=False."
        )
    enable()


def compile_module(model: nn.Module, backend: str | None = None, mode: str | None = None) -> nn.Module:
    """``torch_compile``: compile the model's forward in place with `torch.compile`.

    The module stays the same object (`nn.Module.compile`), so its state-dict keys, its
    parameters (held by the optimizer) and its checkpoints do not change. A module
    already compiled is left as it is.

    Args:
        model: the module to compile.
        backend: a registered dynamo backend (``torch_compile_backend``); None: ``"inductor"``.
        mode: ``torch_compile_mode``, one of `COMPILE_MODES`, or None.

    Returns:
        ``model`` itself.

    Raises:
        ValueError: for an unknown backend or mode (checked before anything compiles).

    Example:
        >>> m = compile_module(nn.Linear(2, 1), backend="eager")
        >>> m(torch.ones(1, 2)).shape
        torch.Size([1, 1])
    """
    backend = backend or "inductor"
    if isinstance(backend, str):
        known = torch._dynamo.list_backends(exclude_tags=())
        if backend not in known:
            raise ValueError(
                f"torch_compile_backend={backend!r} is not a registered torch.compile backend; "
                f"accepted here: {', '.join(sorted(known))}"
            )
    if mode is not None and mode not in COMPILE_MODES:
        raise ValueError(f"torch_compile_mode={mode!r} is not valid; accepted: {', '.join(map(repr, COMPILE_MODES))}")
    if getattr(model, "_compiled_call_impl", None) is not None:
        return model
    model.compile(backend=backend, mode=mode)
    return model


# ----------------------------------------------------------------------------- inference


class _InferenceModule(nn.Module):
    """The module evaluation calls: it holds a traced and/or whole-half-precision model.

    With a ``dtype``, floating inputs are cast to it and autocast is turned off, so the
    computation stays in that dtype. It also gives a frozen TorchScript module the
    ``train()`` / ``eval()`` and ``config`` a plain module has.
    """

    def __init__(
        self, module: nn.Module, dtype: torch.dtype | None, device_type: str, config: Any = None
    ) -> None:
        super().__init__()
        self.module = module
        self.dtype = dtype
        self.device_type = device_type
        if config is not None:
            self.config = config

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if self.dtype is None:
            return self.module(*args, **kwargs)
        args, kwargs = _cast_floats((args, kwargs), self.dtype)
        with torch.autocast(self.device_type, enabled=False):
            return self.module(*args, **kwargs)

    def train(self, mode: bool = True) -> _InferenceModule:
        self.training = mode
        if not isinstance(self.module, torch.jit.ScriptModule):  # a frozen trace has no modes
            self.module.train(mode)
        return self


def half_copy(model: nn.Module, dtype: str) -> nn.Module:
    """A copy of ``model`` with its floating parameters and buffers in fp16/bf16.

    Only the half-precision tensors are allocated: the fp32 originals are never copied,
    and the original model is left untouched. Parameters of the copy do not require
    gradients. The copy does not take its inputs' dtype into account; `inference_model`
    adds the input cast.

    Args:
        model: the model (any device).
        dtype: ``"fp16"`` or ``"bf16"``.

    Example:
        >>> m = nn.Linear(2, 1)
        >>> h = half_copy(m, "bf16")
        >>> h.weight.dtype, m.weight.dtype
        (torch.bfloat16, torch.float32)
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype={dtype!r} is not supported; accepted: 'fp16', 'bf16'")
    target = _DTYPES[dtype]
    memo: dict[int, Any] = {}
    for tensor in itertools.chain(model.parameters(), model.buffers()):
        if id(tensor) in memo:
            continue
        value = tensor.detach()
        if value.is_floating_point():
            value = value.to(target)
        else:
            value = value.clone()
        memo[id(tensor)] = nn.Parameter(value, requires_grad=False) if isinstance(tensor, nn.Parameter) else value
    return copy.deepcopy(model, memo)


_TRACE_ERRORS = (RuntimeError, TypeError, ValueError, NameError, IndexError, AttributeError, AssertionError)


def trace_for_inference(model: nn.Module, example: Any) -> nn.Module:
    """``jit_mode_eval``: a frozen TorchScript trace of ``model`` for inference.

    The trace is recorded on ``example`` (a prepared batch: a mapping of keyword
    arguments or a tuple of positional ones) in eval mode without gradients; autocast is
    left to the caller's context at run time. When tracing fails (data-dependent control
    flow, unsupported outputs...), a warning says why and ``model`` is returned as is.
    """
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.no_grad():
            if isinstance(example, Mapping):
                jit_model = torch.jit.trace(model, example_kwarg_inputs=dict(example), strict=False)
            else:
                inputs = tuple(example) if isinstance(example, (tuple, list)) else (example,)
                jit_model = torch.jit.trace(model, inputs, strict=False)
            jit_model = torch.jit.freeze(jit_model)
            for _ in range(2):  # let the profiling executor specialise before the real batches
                jit_model(**example) if isinstance(example, Mapping) else jit_model(*inputs)
    except _TRACE_ERRORS as err:
        logger.warning("jit_mode_eval: tracing the model failed, evaluating without TorchScript (%s).", err)
        return model
    finally:
        for module, training in modes:
            module.training = training
    return jit_model


def inference_model(
    model: nn.Module, *, half: str | None = None, jit_example: Callable[[], Any] | None = None
) -> tuple[nn.Module, float | None]:
    """The module evaluation and prediction run: ``model``, or a half-precision copy
    (``fp16_full_eval`` / ``bf16_full_eval``), optionally traced (``jit_mode_eval``).

    Args:
        model: the training model (it is never modified).
        half: ``"fp16"`` or ``"bf16"`` to evaluate a whole-model half-precision copy.
        jit_example: returns a prepared example batch; when given, the model is traced.

    Returns:
        ``(module, jit_seconds)``: ``jit_seconds`` is the tracing time (None without jit).

    Example:
        >>> m = nn.Linear(2, 1)
        >>> h, _ = inference_model(m, half="bf16")
        >>> h(torch.ones(1, 2)).dtype, m.weight.dtype
        (torch.bfloat16, torch.float32)
    """
    if half is None and jit_example is None:
        return model, None
    jit_seconds = None
    device_type = next(itertools.chain(model.parameters(), model.buffers(), [torch.empty(0)])).device.type
    config = getattr(model, "config", None)
    if half is not None:
        model = half_copy(model, half)
    if jit_example is not None:
        start = time.time()
        try:
            example = jit_example()
        except StopIteration:
            logger.warning("jit_mode_eval: the dataloader is empty, so there is no batch to trace with.")
        else:
            if half is not None:
                example = _cast_floats(example, _DTYPES[half])
            model = trace_for_inference(model, example)
            jit_seconds = round(time.time() - start, 4)
    dtype = _DTYPES[half] if half is not None else None
    return _InferenceModule(model, dtype, device_type, config), jit_seconds
