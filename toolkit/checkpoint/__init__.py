"""Checkpoints: atomic, verified folders of files over any fsspec storage.

* `CheckpointIO` / `FsspecCheckpointIO`: move a checkpoint folder's bytes (local,
  ``memory://``, ``s3://`` ...), commit it with a checksummed manifest, verify on load.
* `AsyncCheckpointIO`: the same, written by a background thread.
* `CheckpointManager`: ``checkpoint-<step>`` naming, latest, clean-up and rotation.
* `serialization`: safetensors with tied weights, safe pickles, JSON.

See ``docs/checkpointing.md``.
"""

from toolkit.checkpoint.async_io import AsyncCheckpointIO, snapshot
from toolkit.checkpoint.io import (
    MANIFEST_FORMAT,
    MANIFEST_NAME,
    MANIFEST_VERSION,
    CheckpointIO,
    FsspecCheckpointIO,
)
from toolkit.checkpoint.manager import CheckpointManager, get_last_checkpoint, sorted_checkpoints
from toolkit.checkpoint.serialization import (
    TIED_METADATA_KEY,
    CheckpointCorruptedError,
    CheckpointError,
    CheckpointWriteError,
    UnsafeCheckpointError,
    load_json,
    load_object,
    load_tensors,
    save_json,
    save_object,
    save_tensors,
)

__all__ = [
    "CheckpointIO",
    "FsspecCheckpointIO",
    "AsyncCheckpointIO",
    "CheckpointManager",
    "get_last_checkpoint",
    "sorted_checkpoints",
    "snapshot",
    "CheckpointError",
    "CheckpointCorruptedError",
    "CheckpointWriteError",
    "UnsafeCheckpointError",
    "save_tensors",
    "load_tensors",
    "save_object",
    "load_object",
    "save_json",
    "load_json",
    "MANIFEST_NAME",
    "MANIFEST_FORMAT",
    "MANIFEST_VERSION",
    "TIED_METADATA_KEY",
]
