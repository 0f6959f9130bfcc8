"""toolkit: a PyTorch training toolkit.

Composable parts (strategies, precision, checkpoint IO, loggers, callbacks, loops) and a
thin `Trainer` facade with the API of the Hugging Face Trainer. Names are imported
lazily, so ``import toolkit`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    # facade
    "Trainer": "toolkit.trainer",
    "Seq2SeqTrainer": "toolkit.seq2seq",
    # arguments
    "TrainingArguments": "toolkit.args",
    "Seq2SeqTrainingArguments": "toolkit.args",
    "HfArgumentParser": "toolkit.argparser",
    # state and results
    "TrainerState": "toolkit.state",
    "TrainerControl": "toolkit.state",
    "EvalPrediction": "toolkit.types",
    "TrainOutput": "toolkit.types",
    "PredictionOutput": "toolkit.types",
    "EvalLoopOutput": "toolkit.types",
    "BestRun": "toolkit.types",
    "IntervalStrategy": "toolkit.types",
    "SchedulerType": "toolkit.types",
    "OptimizerNames": "toolkit.types",
    "HubStrategy": "toolkit.types",
    # callbacks
    "TrainerCallback": "toolkit.callbacks",
    "CallbackHandler": "toolkit.callbacks",
    "DefaultFlowCallback": "toolkit.callbacks",
    "ProgressCallback": "toolkit.callbacks",
    "PrinterCallback": "toolkit.callbacks",
    "EarlyStoppingCallback": "toolkit.callbacks",
    # utilities
    "set_seed": "toolkit.utils.seed",
    "enable_full_determinism": "toolkit.utils.seed",
    "get_scheduler": "toolkit.optim",
    "get_last_checkpoint": "toolkit.checkpoint",
    "default_data_collator": "toolkit.data",
    "DataCollatorWithPadding": "toolkit.data",
}

__all__ = sorted(_EXPORTS) + ["__version__"]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'toolkit' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
