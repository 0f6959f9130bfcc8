"""Optimizer names to classes and keyword arguments, and weight-decay parameter groups.

This is the part of the HF Trainer's ``create_optimizer`` that does not need a Trainer:
everything takes plain keyword parameters, so a custom loop can call it directly.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from toolkit.optim.adafactor import Adafactor
from toolkit.optim.adamw import AdamW
from toolkit.types import OptimizerNames

__all__ = [
    "NORM_LAYER_TYPES",
    "is_norm_module",
    "optimizer_state_like",
    "get_parameter_names",
    "get_decay_parameter_names",
    "param_groups_for_weight_decay",
    "parse_optim_args",
    "get_optimizer_cls_and_kwargs",
    "create_optimizer",
]

NORM_LAYER_TYPES: tuple[type[nn.Module], ...] = tuple(
    cls
    for cls in (
        nn.LayerNorm,
        nn.GroupNorm,
        nn.LocalResponseNorm,
        getattr(nn, "RMSNorm", None),
        nn.modules.batchnorm._BatchNorm,  # BatchNorm1d/2d/3d, SyncBatchNorm, lazy variants
        nn.modules.instancenorm._InstanceNorm,  # InstanceNorm1d/2d/3d, lazy variants
    )
    if cls is not None
)
"""Normalisation layer types whose weights are never decayed (see `is_norm_module`)."""


def is_norm_module(module: nn.Module) -> bool:
    """Whether ``module`` is a normalisation layer.

    True for the torch normalisation layers in `NORM_LAYER_TYPES` and for any module
    whose class name contains ``"Norm"`` (e.g. a custom ``RMSNorm`` or transformers'
    ``LlamaRMSNorm``).

    Args:
        module: The module to classify.

    Returns:
        True when the module's parameters should not be weight-decayed.
    """
    return isinstance(module, NORM_LAYER_TYPES) or "Norm" in type(module).__name__


def _collect_names(
    module: nn.Module, is_forbidden: Callable[[nn.Module], bool], prefix: str, out: list[str]
) -> None:
    for name, param in module._parameters.items():
        if param is not None:
            out.append(prefix + name)
    for name, child in module.named_children():
        if not is_forbidden(child):
            _collect_names(child, is_forbidden, f"{prefix}{name}.", out)


def get_parameter_names(
    model: nn.Module,
    forbidden_layer_types: Sequence[type[nn.Module]] | Callable[[nn.Module], bool],
) -> list[str]:
    """Names of the parameters of ``model`` that do not live inside a forbidden layer.

    Names are those of ``model.named_parameters()`` (dotted paths). The parameters
    registered directly on ``model`` itself are always kept.

    Args:
        model: The model to walk.
        forbidden_layer_types: Layer types to skip (with everything below them), or a
            predicate ``module -> bool`` that returns True for modules to skip.

    Returns:
        The parameter names, in module order.

    Raises:
        ValueError: If ``forbidden_layer_types`` is neither a sequence of classes nor callable.
    """
    if isinstance(forbidden_layer_types, Sequence) and not isinstance(forbidden_layer_types, str):
        types = tuple(forbidden_layer_types)
        if not all(isinstance(t, type) for t in types):
            raise ValueError(
                f"forbidden_layer_types must be a sequence of module classes or a predicate; got {types!r}."
            )

        def is_forbidden(module: nn.Module) -> bool:
            return isinstance(module, types)

    elif callable(forbidden_layer_types):
        is_forbidden = forbidden_layer_types
    else:
        raise ValueError(
            "forbidden_layer_types must be a sequence of module classes or a predicate; "
            f"got {forbidden_layer_types!r}."
        )
    names: list[str] = []
    _collect_names(model, is_forbidden, "", names)
    return names


def get_decay_parameter_names(model: nn.Module) -> list[str]:
    """Names of the parameters that should receive weight decay.

    Every parameter except those inside a normalisation layer (see `is_norm_module`) and
    those whose name contains ``"bias"`` (the HF Trainer's rule, so e.g. T5's
    ``relative_attention_bias.weight`` is not decayed either).

    Args:
        model: The model to inspect.

    Returns:
        The dotted names of the parameters to decay.
    """
    return [name for name in get_parameter_names(model, is_norm_module) if "bias" not in name]


def param_groups_for_weight_decay(
    model: nn.Module, weight_decay: float, decay_names: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Split the trainable parameters of ``model`` into a decayed and a non-decayed group.

    Parameters with ``requires_grad=False`` are left out, and so is a group that would be
    empty. Shared (tied) parameters appear once. With ``weight_decay=0`` the two groups
    would have the same settings, so they are one group (decayed parameters first, the
    order two groups would have): an optimizer steps each group separately, which costs
    a tiny model several percent of its step time for nothing.
    `fit_param_groups` loads a two-group state saved before into such an optimizer.

    Args:
        model: The model whose parameters to group.
        weight_decay: The decay of the first group (>= 0); the second gets 0.0.
        decay_names: The names of the parameters to decay; by default
            `get_decay_parameter_names` of ``model``.

    Returns:
        Up to two dicts ``{"params": [...], "weight_decay": float}``, decayed group first;
        one when ``weight_decay`` is 0.

    Raises:
        ValueError: If ``weight_decay`` is negative.

    Example:
        >>> groups = param_groups_for_weight_decay(torch.nn.Linear(3, 2), 0.01)
        >>> [(len(g["params"]), g["weight_decay"]) for g in groups]
        [(1, 0.01), (1, 0.0)]
    """
    if weight_decay < 0.0:
        raise ValueError(f"weight_decay must be >= 0.0, got {weight_decay!r}.")
    decay_set = set(get_decay_parameter_names(model) if decay_names is None else decay_names)
    decay: list[nn.Parameter] = []
    no_decay: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        (decay if name in decay_set else no_decay).append(param)
    if weight_decay == 0.0:
        params = decay + no_decay
        return [{"params": params, "weight_decay": 0.0}] if params else []
    groups = [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [group for group in groups if group["params"]]


def fit_param_groups(state: dict[str, Any], optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Adapt a saved optimizer state to ``optimizer`` when only the grouping differs.

    A state saved with several parameter groups whose settings are all equal (the
    decayed and non-decayed groups of a run with ``weight_decay=0``, as older versions
    and the HF Trainer save them) loads into an optimizer holding the same parameters
    in one group: the groups are joined in order, which is the order of that one group
    (see `param_groups_for_weight_decay`). Any other state is returned unchanged, for
    ``optimizer.load_state_dict`` to accept or reject.

    Args:
        state: What ``optimizer.state_dict()`` returned when the checkpoint was saved.
        optimizer: The optimizer about to load it.

    Returns:
        ``state``, or a copy with its groups joined into one.
    """
    saved = state.get("param_groups")
    if not isinstance(saved, list) or len(saved) < 2 or len(optimizer.param_groups) != 1:
        return state
    settings = [{k: v for k, v in g.items() if k != "params"} for g in saved]
    joined = [i for g in saved for i in g["params"]]
    if any(s != settings[0] for s in settings) or len(joined) != len(optimizer.param_groups[0]["params"]):
        return state
    return {**state, "param_groups": [{**settings[0], "params": joined}]}


def _convert_value(text: str) -> Any:
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered == "none":
        return None
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def parse_optim_args(optim_args: str | None) -> dict[str, Any]:
    """Parse an ``optim_args`` string such as ``"momentum=0.9,nesterov=True"``.

    Entries are ``key=value`` pairs separated by commas; spaces are ignored. Values
    become ``bool`` (``true``/``false``, any case), ``None`` (``none``), ``int``,
    ``float`` or, failing those, stay strings.

    Args:
        optim_args: The string to parse, or None / an empty string.

    Returns:
        The parsed keyword arguments.

    Raises:
        ValueError: If an entry is not ``key=value`` or a key repeats.

    Example:
        >>> parse_optim_args("momentum=0.9, nesterov=True, dampening=0")
        {'momentum': 0.9, 'nesterov': True, 'dampening': 0}
    """
    parsed: dict[str, Any] = {}
    if not optim_args:
        return parsed
    for entry in optim_args.replace(" ", "").split(","):
        if not entry:
            continue
        key, sep, value = entry.partition("=")
        if not sep or not key or not value:
            raise ValueError(
                f"optim_args entry {entry!r} is not of the form key=value "
                f"(optim_args={optim_args!r}; expected e.g. 'momentum=0.9,nesterov=True')."
            )
        if key in parsed:
            raise ValueError(f"optim_args gives {key!r} more than once (optim_args={optim_args!r}).")
        parsed[key] = _convert_value(value)
    return parsed


def _import(module: str, package: str, optim: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"optim={optim!r} needs the `{package}` package, which is not installed "
            f"(could not import {module!r}). Install {package} or choose another optimizer."
        ) from err


def _check_kwargs(optimizer_cls: type, extra: dict[str, Any], optim: str) -> None:
    """Reject optim_args keys the optimizer's constructor does not accept."""
    try:
        parameters = inspect.signature(optimizer_cls.__init__).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return
    accepted = [name for name in parameters if name not in ("self", "params")]
    unknown = sorted(key for key in extra if key not in accepted)
    if unknown:
        raise ValueError(
            f"optim_args has keys {unknown} that optim={optim!r} ({optimizer_cls.__name__}) does not "
            f"accept; accepted keys: {', '.join(accepted)}."
        )


def get_optimizer_cls_and_kwargs(
    optim: str | OptimizerNames,
    *,
    learning_rate: float,
    adam_beta1: float = 0.9,
    adam_beta2: float = 0.999,
    adam_epsilon: float = 1e-8,
    optim_args: str | None = None,
) -> tuple[type[torch.optim.Optimizer], dict[str, Any]]:
    """The optimizer class and constructor keyword arguments (all but ``params``) for a name.

    Mirrors ``Trainer.get_optimizer_cls_and_kwargs`` of HF 4.34, with plain parameters.
    ``optim_args`` is parsed with `parse_optim_args` and merged last, so it overrides the
    defaults (e.g. ``"momentum=0.9"`` for ``sgd``, ``"correct_bias=False"`` for
    ``adamw_hf``); for ``adamw_anyprecision`` it carries the HF keys
    ``use_kahan_summation``, ``momentum_dtype``, ``variance_dtype`` and
    ``compensation_buffer_dtype``.

    Args:
        optim: An `OptimizerNames` value, e.g. ``"adamw_torch"``.
        learning_rate: Passed as ``lr``.
        adam_beta1: First-moment decay of the Adam-family optimizers.
        adam_beta2: Second-moment decay of the Adam-family optimizers.
        adam_epsilon: Epsilon of the Adam-family optimizers.
        optim_args: Extra ``key=value`` pairs, comma separated.

    Returns:
        ``(optimizer_class, kwargs)``.

    Raises:
        ValueError: For an unknown name (the message lists the accepted names), or
            ``optim_args`` keys the optimizer does not accept.
        ImportError: When the optimizer lives in a package that is not installed
            (``torchdistx``, ``apex``, ``torch_xla``, ``torch_npu``, ``bitsandbytes``).
        RuntimeError: For ``adamw_torch_fused`` on a torch without fused AdamW.
    """
    try:
        name = OptimizerNames(optim)
    except ValueError:
        accepted = ", ".join(repr(member.value) for member in OptimizerNames)
        raise ValueError(f"optim={optim!r} is not supported; accepted values: {accepted}.") from None

    extra = parse_optim_args(optim_args)
    kwargs: dict[str, Any] = {"lr": learning_rate}
    adam_kwargs = {"betas": (adam_beta1, adam_beta2), "eps": adam_epsilon}
    optimizer_cls: type

    if name is OptimizerNames.ADAFACTOR:
        optimizer_cls = Adafactor
        kwargs.update(scale_parameter=False, relative_step=False)
    elif name is OptimizerNames.ADAMW_HF:
        optimizer_cls = AdamW
        kwargs.update(adam_kwargs)
    elif name in (OptimizerNames.ADAMW_TORCH, OptimizerNames.ADAMW_TORCH_FUSED):
        optimizer_cls = torch.optim.AdamW
        kwargs.update(adam_kwargs)
        if name is OptimizerNames.ADAMW_TORCH_FUSED:
            if "fused" not in inspect.signature(torch.optim.AdamW.__init__).parameters:
                raise RuntimeError(
                    f"optim='adamw_torch_fused' needs torch.optim.AdamW(fused=True), which torch "
                    f"{torch.__version__} does not provide; use optim='adamw_torch'."
                )
            kwargs["fused"] = True
    elif name is OptimizerNames.ADAMW_TORCH_XLA:
        optimizer_cls = _import("torch_xla.amp.syncfree", "torch_xla", name.value).AdamW
        kwargs.update(adam_kwargs)
    elif name is OptimizerNames.ADAMW_TORCH_NPU_FUSED:
        optimizer_cls = _import("torch_npu.optim", "torch_npu", name.value).NpuFusedAdamW
        kwargs.update(adam_kwargs)
    elif name is OptimizerNames.ADAMW_APEX_FUSED:
        optimizer_cls = _import("apex.optimizers", "apex", name.value).FusedAdam
        kwargs.update(adam_kwargs)
    elif name is OptimizerNames.ADAMW_ANYPRECISION:
        optimizer_cls = _import("torchdistx.optimizers", "torchdistx", name.value).AnyPrecisionAdamW
        kwargs.update(adam_kwargs)
        kwargs.update(
            use_kahan_summation=bool(extra.pop("use_kahan_summation", False)),
            momentum_dtype=getattr(torch, str(extra.pop("momentum_dtype", "float32"))),
            variance_dtype=getattr(torch, str(extra.pop("variance_dtype", "float32"))),
            compensation_buffer_dtype=getattr(torch, str(extra.pop("compensation_buffer_dtype", "bfloat16"))),
        )
    elif name in _BNB_OPTIMIZERS:
        bnb_optim = _import("bitsandbytes.optim", "bitsandbytes", name.value)
        family, bits, paged = _BNB_OPTIMIZERS[name]
        optimizer_cls = getattr(bnb_optim, family)
        kwargs.update(optim_bits=bits, is_paged=paged)
        kwargs.update(adam_kwargs if family == "AdamW" else {"betas": (adam_beta1, adam_beta2)})
    elif name is OptimizerNames.SGD:
        optimizer_cls = torch.optim.SGD
    elif name is OptimizerNames.ADAGRAD:
        optimizer_cls = torch.optim.Adagrad
    elif name is OptimizerNames.RMSPROP:
        optimizer_cls = torch.optim.RMSprop
    else:  # pragma: no cover - every enum member is handled above
        raise ValueError(f"optim={optim!r} has no optimizer mapping.")

    _check_kwargs(optimizer_cls, extra, name.value)
    kwargs.update(extra)
    return optimizer_cls, kwargs


_BNB_OPTIMIZERS: dict[OptimizerNames, tuple[str, int, bool]] = {
    OptimizerNames.ADAMW_BNB: ("AdamW", 8, False),
    OptimizerNames.ADAMW_8BIT: ("AdamW", 8, False),
    OptimizerNames.PAGED_ADAMW: ("AdamW", 32, True),
    OptimizerNames.PAGED_ADAMW_8BIT: ("AdamW", 8, True),
    OptimizerNames.LION: ("Lion", 32, False),
    OptimizerNames.LION_8BIT: ("Lion", 8, False),
    OptimizerNames.PAGED_LION: ("Lion", 32, True),
    OptimizerNames.PAGED_LION_8BIT: ("Lion", 8, True),
}


def create_optimizer(
    model: nn.Module,
    optim: str | OptimizerNames = "adamw_torch",
    *,
    learning_rate: float,
    weight_decay: float = 0.0,
    adam_beta1: float = 0.9,
    adam_beta2: float = 0.999,
    adam_epsilon: float = 1e-8,
    optim_args: str | None = None,
) -> torch.optim.Optimizer:
    """Build the named optimizer over ``model``'s weight-decay parameter groups.

    Biases and normalisation weights get no decay (see `param_groups_for_weight_decay`);
    frozen parameters are left out.

    Args:
        model: The model to optimize.
        optim: An `OptimizerNames` value.
        learning_rate: The initial learning rate.
        weight_decay: Decay applied to the decayed group.
        adam_beta1: First-moment decay of the Adam-family optimizers.
        adam_beta2: Second-moment decay of the Adam-family optimizers.
        adam_epsilon: Epsilon of the Adam-family optimizers.
        optim_args: Extra ``key=value`` pairs for the optimizer, comma separated.

    Returns:
        The optimizer.

    Raises:
        ValueError: For an unknown name, bad ``optim_args``, a negative weight decay, or
            a model without trainable parameters.
        ImportError: When the optimizer's package is not installed.

    Example:
        >>> opt = create_optimizer(torch.nn.Linear(4, 2), "sgd", learning_rate=0.1,
        ...                        optim_args="momentum=0.9")
        >>> type(opt).__name__, opt.defaults["momentum"]
        ('SGD', 0.9)
    """
    optimizer_cls, kwargs = get_optimizer_cls_and_kwargs(
        optim,
        learning_rate=learning_rate,
        adam_beta1=adam_beta1,
        adam_beta2=adam_beta2,
        adam_epsilon=adam_epsilon,
        optim_args=optim_args,
    )
    groups = param_groups_for_weight_decay(model, weight_decay)
    if not groups:
        raise ValueError("model has no parameters with requires_grad=True to optimize.")
    return optimizer_cls(groups, **kwargs)


def _param_shaped_state_count(optimizer: torch.optim.Optimizer, group: dict[str, Any]) -> int:
    """How many parameter-shaped state tensors ``optimizer`` keeps per parameter of ``group``
    (0 for an optimizer whose state is not known here)."""
    if isinstance(optimizer, (torch.optim.Adam, torch.optim.AdamW)):
        return 3 if group.get("amsgrad") else 2
    if isinstance(optimizer, (torch.optim.NAdam, torch.optim.RAdam, torch.optim.Adamax, AdamW)):
        return 2
    if isinstance(optimizer, torch.optim.SGD):
        return 1 if group.get("momentum") else 0
    if isinstance(optimizer, torch.optim.RMSprop):
        return 1 + bool(group.get("momentum")) + bool(group.get("centered"))
    return 0


def optimizer_state_like(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """Tensors shaped like the state ``optimizer`` will hold once it has stepped.

    Once the optimizer has state, these are its state's tensors. Before its first step,
    they are ``meta`` tensors (no memory) shaped like what the common torch optimizers
    create lazily: the moments of Adam, AdamW, NAdam, RAdam, Adamax and toolkit's AdamW,
    SGD's momentum buffer, RMSprop's averages, one per trainable parameter; scalar step
    counters are left out. Other optimizers give an empty list before their first step.
    Used to allocate checkpoint buffers ahead of the first save.

    Args:
        optimizer: Any ``torch.optim.Optimizer``.

    Returns:
        A flat list of tensors.

    Example:
        >>> w = torch.nn.Parameter(torch.zeros(3, 2))
        >>> [tuple(t.shape) for t in optimizer_state_like(torch.optim.AdamW([w]))]
        [(3, 2), (3, 2)]
    """
    existing = [
        v for state in optimizer.state.values() for v in state.values() if isinstance(v, torch.Tensor)
    ]
    if existing:
        return existing
    out: list[torch.Tensor] = []
    for group in optimizer.param_groups:
        count = _param_shaped_state_count(optimizer, group)
        for p in group["params"]:
            if p.requires_grad:
                out.extend(
                    torch.empty_strided(p.shape, p.stride(), dtype=p.dtype, device="meta")
                    for _ in range(count)
                )
    return out
