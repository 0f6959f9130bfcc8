"""Strategies: where the model runs and how processes share the work."""

from toolkit.strategies.base import SingleDeviceStrategy, Strategy, move_to_device, select_device
from toolkit.strategies.ddp import DDPStrategy
from toolkit.strategies.eval_gather import OrderedGather
from toolkit.strategies.registry import available_strategies, get_strategy_class, register_strategy

__all__ = [
    "Strategy",
    "SingleDeviceStrategy",
    "DDPStrategy",
    "OrderedGather",
    "available_strategies",
    "get_strategy_class",
    "register_strategy",
    "move_to_device",
    "select_device",
]
