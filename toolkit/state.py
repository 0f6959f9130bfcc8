"""Plain-data run state shared by the loops, the callbacks and the facade.

`TrainerState` is what a callback may read (and what `trainer_state.json` holds);
`TrainerControl` is how a callback asks the loop to log, evaluate, save or stop.
Neither holds tensors or references to the model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TrainerState", "TrainerControl"]


@dataclass
class TrainerState:
    """Progress of a run, saved with every checkpoint as ``trainer_state.json``.

    The field names and meaning follow the Hugging Face Trainer: ``global_step`` counts
    optimizer updates, ``epoch`` is fractional during an epoch, and ``log_history`` holds
    every dictionary passed to ``log`` with its ``step``.

    Example:
        >>> s = TrainerState(global_step=3, epoch=0.5)
        >>> TrainerState.from_json_string(s.to_json_string()).global_step
        3
    """

    epoch: float | None = None
    global_step: int = 0
    max_steps: int = 0
    logging_steps: int = 500
    eval_steps: int = 500
    save_steps: int = 500
    num_train_epochs: int = 0
    train_batch_size: int | None = None
    total_flos: float = 0
    log_history: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    best_model_checkpoint: str | None = None
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True
    is_hyper_param_search: bool = False
    trial_name: str | None = None
    trial_params: dict[str, Any] | None = None
    stateful_callbacks: dict[str, Any] = field(default_factory=dict)

    def to_json_string(self) -> str:
        """Serialise to a JSON string (indented, keys sorted)."""
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n"

    def save_to_json(self, json_path: str) -> None:
        """Write the state as JSON to a local path."""
        with open(json_path, "w", encoding="utf-8") as f:
            f.write(self.to_json_string())

    @classmethod
    def from_json_string(cls, text: str) -> TrainerState:
        """Build a state from JSON text; unknown keys (from newer writers) are ignored."""
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def load_from_json(cls, json_path: str) -> TrainerState:
        """Read a state written by `save_to_json`."""
        with open(json_path, encoding="utf-8") as f:
            return cls.from_json_string(f.read())


@dataclass
class TrainerControl:
    """Flags a callback sets to steer the loop; the loop resets them once acted on.

    Example:
        >>> c = TrainerControl()
        >>> c.should_save = True
        >>> c._new_step(); c.should_save
        False
    """

    should_training_stop: bool = False
    should_epoch_stop: bool = False
    should_save: bool = False
    should_evaluate: bool = False
    should_log: bool = False

    def _new_training(self) -> None:
        self.should_training_stop = False

    def _new_epoch(self) -> None:
        self.should_epoch_stop = False

    def _new_step(self) -> None:
        self.should_save = False
        self.should_evaluate = False
        self.should_log = False

    def state_dict(self) -> dict[str, bool]:
        """The flags as a dictionary (for checkpoints)."""
        return dataclasses.asdict(self)

    def load_state_dict(self, state: dict[str, bool]) -> None:
        """Restore flags saved by `state_dict`."""
        for k, v in state.items():
            if hasattr(self, k):
                setattr(self, k, bool(v))
