"""The ``hf`` implementation: the Hugging Face ``transformers`` Trainer (4.34 for the
reference figures; see ``--hf-python``), through the same driver as toolkit's facade."""

from __future__ import annotations

import os

# transformers 4.34 reads its own rng_state.pth with torch.load's old default
# (weights_only=False); torch >= 2.6 needs this to keep that default for it.
os.environ.setdefault("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")

from transformers import Trainer, TrainerCallback, TrainingArguments  # noqa: E402

from benchmarks.impl_trainer import TrainerAPI, workloads_for  # noqa: E402

__all__ = ["WORKLOADS", "prepare"]

WORKLOADS, prepare = workloads_for(TrainerAPI(Trainer, TrainingArguments, TrainerCallback))
