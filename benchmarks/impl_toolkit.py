"""The ``toolkit`` implementation: the `Trainer` facade (see `benchmarks.impl_trainer`)."""

from __future__ import annotations

from benchmarks.impl_trainer import TrainerAPI, workloads_for
from toolkit import Trainer, TrainerCallback, TrainingArguments

__all__ = ["WORKLOADS", "prepare"]

WORKLOADS, prepare = workloads_for(TrainerAPI(Trainer, TrainingArguments, TrainerCallback))
