"""Data parts: collators, resumable samplers and unused-column removal.

Everything here works without a `TrainingArguments`; the `Trainer` facade builds these
objects from its arguments, and a composer can build them directly.
"""

from toolkit.data.collators import DataCollatorWithPadding, default_data_collator
from toolkit.data.columns import RemoveColumnsCollator, remove_columns_from_hf_dataset, signature_columns
from toolkit.data.length_grouped import LengthGroupedSampler
from toolkit.data.samplers import ResumableRandomSampler, ShardedEvalSampler, seed_worker

__all__ = [
    "DataCollatorWithPadding",
    "LengthGroupedSampler",
    "RemoveColumnsCollator",
    "ResumableRandomSampler",
    "ShardedEvalSampler",
    "default_data_collator",
    "remove_columns_from_hf_dataset",
    "seed_worker",
    "signature_columns",
]
