"""Strategies: where the model runs and how processes share the work."""

from toolkit.strategies.base import SingleDeviceStrategy, Strategy, move_to_device, select_device

__all__ = ["Strategy", "SingleDeviceStrategy", "move_to_device", "select_device"]
