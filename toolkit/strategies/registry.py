"""Strategy names -> classes, each with a one-line description.

Adding a backend means one class and one `register_strategy` line; the connector looks
names up here. An entry may name its class lazily as ``"module:Class"`` so that optional
dependencies are imported only when that strategy is used.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

from toolkit.strategies.base import Strategy

__all__ = ["StrategyEntry", "register_strategy", "get_strategy_class", "available_strategies", "STRATEGIES"]


@dataclass(frozen=True)
class StrategyEntry:
    """One registered strategy: its name, its class (or ``"module:Class"``) and what it does."""

    name: str
    target: type[Strategy] | str
    description: str

    def load(self) -> type[Strategy]:
        """The strategy class (imported on first use for a lazy entry)."""
        if isinstance(self.target, str):
            module, _, attr = self.target.partition(":")
            return getattr(importlib.import_module(module), attr)
        return self.target


STRATEGIES: dict[str, StrategyEntry] = {}


def register_strategy(name: str, target: type[Strategy] | str, description: str, *, replace: bool = False) -> None:
    """Register a strategy under ``name``.

    Args:
        name: the name users pass (lower case, e.g. ``"ddp"``).
        target: the class, or ``"module:Class"`` to import it on first use.
        description: one line saying what the strategy does.
        replace: allow replacing an existing entry.

    Raises:
        ValueError: when ``name`` is taken and ``replace`` is False.
    """
    if name in STRATEGIES and not replace:
        raise ValueError(f"a strategy named {name!r} is already registered; pass replace=True to replace it")
    STRATEGIES[name] = StrategyEntry(name, target, description)


def get_strategy_class(name: str) -> type[Strategy]:
    """The class registered under ``name``.

    Raises:
        ValueError: for an unknown name (the message lists the registered ones).

    Example:
        >>> get_strategy_class("ddp").__name__
        'DDPStrategy'
    """
    entry = STRATEGIES.get(name)
    if entry is None:
        raise ValueError(f"strategy={name!r} is not registered; accepted: {', '.join(map(repr, STRATEGIES))}")
    return entry.load()


def available_strategies() -> dict[str, str]:
    """Registered names and their descriptions.

    Example:
        >>> {'ddp', 'single_device'} <= set(available_strategies())
        True
    """
    return {name: entry.description for name, entry in STRATEGIES.items()}


register_strategy(
    "single_device", "toolkit.strategies.base:SingleDeviceStrategy",
    "One process on one device (CPU, one CUDA GPU or Apple MPS).",
)
register_strategy(
    "ddp", "toolkit.strategies.ddp:DDPStrategy",
    "One process per device; DistributedDataParallel averages gradients (torchrun, accelerate launch, SLURM).",
)
register_strategy(
    "deepspeed", "toolkit.strategies.deepspeed:DeepSpeedStrategy",
    "DeepSpeed ZeRO stages 0-3 with optional CPU offload (HF deepspeed config, \"auto\" values filled in).",
)
register_strategy(
    "fsdp", "toolkit.strategies.fsdp:FSDPStrategy",
    "Fully sharded data parallel on FSDP2 fully_shard (HF fsdp / fsdp_config options).",
)
register_strategy(
    "xla", "toolkit.strategies.xla:XLAStrategy",
    "One process per XLA device (TPU, PJRT) through torch_xla; gradients reduced by torch_xla.",
)
