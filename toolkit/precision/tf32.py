"""The TF32 switch (``tf32``): TensorFloat-32 matmuls and convolutions on Ampere+ GPUs.

The switch is process-wide in PyTorch, so it is only touched for a CUDA device and only
when asked (``None`` leaves PyTorch's setting alone). On any other device nothing changes.
"""

from __future__ import annotations

import logging

import torch

__all__ = ["set_tf32"]

logger = logging.getLogger(__name__)


def set_tf32(enabled: bool | None, device: torch.device) -> bool:
    """Turn TF32 on or off for CUDA matmuls (cuBLAS) and convolutions (cuDNN).

    Args:
        enabled: True / False, or None to leave PyTorch's setting unchanged.
        device: the training device; nothing changes unless it is a CUDA device.

    Returns:
        True when the switch was set.

    Raises:
        ValueError: when ``enabled`` is True and the GPU predates Ampere (no TF32).

    Example:
        >>> set_tf32(True, torch.device("cpu"))  # not CUDA: nothing changes
        False
    """
    if enabled is None:
        return False
    if device.type != "cuda":
        logger.info("tf32=%s only applies to CUDA devices; training on %s, so nothing changes.", enabled, device)
        return False
    if enabled:
        major, minor = torch.cuda.get_device_capability(device)
        if major < 8:
            raise ValueError(
                f"tf32=True needs an Ampere or newer GPU (compute capability >= 8.0); {device} has {major}.{minor}. "
                "Use tf32=None or False."
            )
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    return True
