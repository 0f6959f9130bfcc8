"""`Seq2SeqTrainer`: the `Trainer` plus generation-based evaluation and prediction.

With ``Seq2SeqTrainingArguments(predict_with_generate=True)``, `evaluate` and `predict`
run ``model.generate(...)`` on every batch and return the generated token ids as
predictions (so ``compute_metrics`` can score BLEU, ROUGE, exact match ...), while the
loss is still computed from the labels. A `transformers` model brings its own
``generate``; a plain `nn.Module` gets one from `toolkit.generation.Seq2SeqGenerationMixin`.

Everything else (training, the evaluation loop, checkpoints) is the `Trainer`'s.
"""

from __future__ import annotations

import copy
import logging
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolkit.data import LengthGroupedSampler
from toolkit.generation import GenerationConfig, Seq2SeqGenerationMixin
from toolkit.trainer import Trainer
from toolkit.types import PredictionOutput

__all__ = ["Seq2SeqTrainer"]

logger = logging.getLogger(__name__)

# decoder inputs that a collator derives from the labels: generation must not see them
_DECODER_INPUTS_FROM_LABELS = ("decoder_input_ids", "decoder_attention_mask")


def _is_transformers_model(model: Any) -> bool:
    """True for a `transformers.PreTrainedModel` (without importing `transformers`)."""
    transformers = sys.modules.get("transformers")
    base = getattr(transformers, "PreTrainedModel", None) if transformers is not None else None
    return base is not None and isinstance(model, base)


class Seq2SeqTrainer(Trainer):
    """A `Trainer` for sequence-to-sequence models that can evaluate by generating.

    Takes the same arguments as `Trainer`; the generation options are read from
    `Seq2SeqTrainingArguments`:

    * ``predict_with_generate``: predictions are ``model.generate(...)`` outputs.
    * ``generation_max_length`` / ``generation_num_beams``: defaults for ``max_length`` /
      ``num_beams`` of `evaluate` and `predict` (which may override them per call).
    * ``generation_config``: a config object, a dict, a ``generation_config.json`` file or
      a folder holding one; it becomes ``model.generation_config``.
    * ``sortish_sampler``: train on batches of similar input lengths (see
      `LengthGroupedSampler`; the same sampler as ``group_by_length``).

    Generated tokens are padded on the right to the length limit of the call (see
    `prediction_step`) with the pad id, and so are shorter labels. Across batches the
    evaluation loop pads with -100, as for any prediction: replace -100 by the pad id
    before decoding.

    Example:
        >>> Seq2SeqTrainer.load_generation_config({"max_length": 12, "num_beams": 3}).num_beams
        3
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._check_can_generate()
        config = getattr(self.args, "generation_config", None)
        if config is not None:
            self.model.generation_config = self.load_generation_config(config, model=self.model)
        self._gen_kwargs: dict[str, Any] = {}

    # ----------------------------------------------------------------- configuration
    @staticmethod
    def load_generation_config(gen_config_arg: Any, model: nn.Module | None = None) -> Any:
        """Turn the ``generation_config`` argument into a config object.

        Args:
            gen_config_arg: A config object (copied), a dict, a JSON file, a folder with a
                ``generation_config.json``, or (with `transformers`) a model id.
            model: When it is a `transformers` model, a `transformers.GenerationConfig` is
                built; otherwise a `toolkit.generation.GenerationConfig`.

        Returns:
            The config object.

        Raises:
            ValueError: For a path that does not exist when `transformers` (needed to
                fetch a model id) is not installed.
        """
        if _is_transformers_model(model):
            from transformers import GenerationConfig as HFGenerationConfig

            if isinstance(gen_config_arg, HFGenerationConfig):
                return copy.deepcopy(gen_config_arg)
            if isinstance(gen_config_arg, Mapping):
                return HFGenerationConfig.from_dict(dict(gen_config_arg))
            if callable(getattr(gen_config_arg, "to_dict", None)):
                return HFGenerationConfig.from_dict(gen_config_arg.to_dict())
            path = Path(gen_config_arg)
            if path.is_file():
                return HFGenerationConfig.from_pretrained(path.parent, path.name)
            return HFGenerationConfig.from_pretrained(str(gen_config_arg))
        if isinstance(gen_config_arg, GenerationConfig):
            return copy.deepcopy(gen_config_arg)
        if isinstance(gen_config_arg, Mapping):
            return GenerationConfig.from_dict(gen_config_arg)
        if callable(getattr(gen_config_arg, "to_dict", None)):
            return GenerationConfig.from_dict(gen_config_arg.to_dict())
        path = Path(gen_config_arg)
        if path.is_file() or path.is_dir():
            return GenerationConfig.from_pretrained(path)
        raise ValueError(
            f"generation_config={gen_config_arg!r} is neither a file nor a folder; loading a config by "
            "model id needs a transformers model (pip install 'toolkit[transformers]')."
        )

    def _generation_kwargs(self, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The call's settings, completed by the ``generation_*`` arguments (call wins)."""
        out = dict(gen_kwargs)
        args = self.args
        max_length = getattr(args, "generation_max_length", None)
        if out.get("max_length") is None and out.get("max_new_tokens") is None and max_length is not None:
            out["max_length"] = max_length
        num_beams = getattr(args, "generation_num_beams", None)
        if out.get("num_beams") is None and num_beams is not None:
            out["num_beams"] = num_beams
        self._check_can_generate()
        return out

    def _check_can_generate(self) -> None:
        if getattr(self.args, "predict_with_generate", False) and not callable(getattr(self.model, "generate", None)):
            raise TypeError(
                f"predict_with_generate=True needs a model with a `generate` method; {type(self.model).__name__} "
                "has none. Inherit toolkit.generation.Seq2SeqGenerationMixin (with encode/decode methods) "
                "or use a transformers model."
            )

    # ----------------------------------------------------------------- data
    def _get_train_sampler(self, dataset: Any = None) -> Any:
        """With ``sortish_sampler``, a `LengthGroupedSampler` over the input lengths."""
        args = self.args
        if not getattr(args, "sortish_sampler", False) or args.group_by_length:
            return super()._get_train_sampler(dataset)
        dataset = self.train_dataset if dataset is None else dataset
        logger.info("sortish_sampler: training batches are grouped by input length (LengthGroupedSampler).")
        names = getattr(self.tokenizer, "model_input_names", None) or ["input_ids"]
        return LengthGroupedSampler(
            self._train_batch_size * self._grad_accum, dataset=dataset,
            length_column_name=args.length_column_name, model_input_name=names[0], seed=self._data_seed(),
            num_replicas=self.strategy.world_size, rank=self.strategy.global_rank,
            drop_last=args.dataloader_drop_last,
        )

    # ----------------------------------------------------------------- evaluation
    def evaluate(
        self,
        eval_dataset: Any = None,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "eval",
        **gen_kwargs: Any,
    ) -> dict[str, float]:
        """Evaluate and return ``{prefix}_*`` metrics; generate when ``predict_with_generate``.

        Args:
            eval_dataset: Data to evaluate instead of the trainer's ``eval_dataset`` (a
                dict of datasets is evaluated one by one, prefixes ``{prefix}_{name}``).
            ignore_keys: Model output keys left out of the predictions (when not generating).
            metric_key_prefix: Prefix of every metric name.
            **gen_kwargs: Settings for ``model.generate`` (``max_length``,
                ``max_new_tokens``, ``num_beams``, ...); ``max_length`` and ``num_beams``
                default to ``generation_max_length`` / ``generation_num_beams``.
        """
        datasets = eval_dataset if eval_dataset is not None else self.eval_dataset
        if isinstance(datasets, dict):
            metrics: dict[str, float] = {}
            for name, dataset in datasets.items():
                metrics.update(self.evaluate(dataset, ignore_keys, f"{metric_key_prefix}_{name}", **gen_kwargs))
            return metrics
        self._gen_kwargs = self._generation_kwargs(gen_kwargs)
        return super().evaluate(eval_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def predict(
        self,
        test_dataset: Any,
        ignore_keys: list[str] | None = None,
        metric_key_prefix: str = "test",
        **gen_kwargs: Any,
    ) -> PredictionOutput:
        """Predict on ``test_dataset``: predictions (generated ids when
        ``predict_with_generate``), label ids when present, and metrics.

        Args:
            test_dataset: The data.
            ignore_keys: Model output keys left out of the predictions (when not generating).
            metric_key_prefix: Prefix of every metric name.
            **gen_kwargs: Settings for ``model.generate``, as for `evaluate`.
        """
        self._gen_kwargs = self._generation_kwargs(gen_kwargs)
        return super().predict(test_dataset, ignore_keys=ignore_keys, metric_key_prefix=metric_key_prefix)

    def prediction_step(
        self,
        model: nn.Module,
        inputs: Any,
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
        **gen_kwargs: Any,
    ) -> tuple[torch.Tensor | None, Any, Any]:
        """``(loss, generated_tokens, labels)`` for one batch when generating.

        Without ``predict_with_generate`` (or when only the loss is wanted) this is the
        `Trainer`'s step. Otherwise: ``self.model.generate(**inputs, **gen_kwargs)`` on
        the batch without its labels (and without decoder inputs of the labels' shape,
        which a collator built from them), the settings being ``gen_kwargs`` or those
        of the current `evaluate` / `predict` call. Tokens and labels shorter than the
        length limit (``max_new_tokens + 1`` or ``max_length`` of the call, else of
        ``model.generation_config``) are padded with the pad id (`_pad_token_id`). The
        loss is `compute_loss` on the whole batch when it has labels.
        """
        if not getattr(self.args, "predict_with_generate", False) or prediction_loss_only:
            return super().prediction_step(model, inputs, prediction_loss_only, ignore_keys=ignore_keys)
        if not isinstance(inputs, Mapping):
            raise TypeError(
                f"predict_with_generate needs batches that are mappings of model inputs, got {type(inputs).__name__}"
            )
        has_labels = all(inputs.get(name) is not None for name in self.label_names)
        inputs = self._prepare_inputs(inputs)
        gen_kwargs = dict(gen_kwargs) if gen_kwargs else dict(self._gen_kwargs)
        for name in ("max_length", "num_beams"):
            if gen_kwargs.get(name, 0) is None:
                gen_kwargs.pop(name)
        if getattr(self.strategy, "zero_stage", None) == 3:  # sharded weights: ranks decode in step
            gen_kwargs.setdefault("synced_gpus", True)
        generation_inputs = {k: v for k, v in inputs.items() if k not in self.label_names}
        labels = inputs.get("labels")
        if isinstance(labels, torch.Tensor):
            for name in _DECODER_INPUTS_FROM_LABELS:
                value = generation_inputs.get(name)
                if isinstance(value, torch.Tensor) and value.shape == labels.shape:
                    del generation_inputs[name]
        with torch.no_grad(), self.autocast_smart_context_manager():
            generated = self.model.generate(**generation_inputs, **gen_kwargs)
        target = self._generation_length(gen_kwargs)
        if target is not None and generated.shape[-1] < target:
            generated = self._pad_tensors_to_max_len(generated, target)

        loss = None
        if has_labels:
            with torch.no_grad(), self.compute_loss_context_manager():
                loss = self.compute_loss(model, inputs)
            loss = loss.mean().detach()
        if self.args.prediction_loss_only:
            return loss, None, None
        label_values = None
        if has_labels:
            padded = [self._pad_labels(inputs[name], target) for name in self.label_names]
            label_values = padded[0] if len(padded) == 1 else tuple(padded)
        return loss, generated, label_values

    def _generation_length(self, gen_kwargs: Mapping[str, Any]) -> int | None:
        """The length generated sequences are padded to (None: no padding)."""
        if gen_kwargs.get("max_new_tokens") is not None:
            return int(gen_kwargs["max_new_tokens"]) + 1
        if gen_kwargs.get("max_length") is not None:
            return int(gen_kwargs["max_length"])
        config = getattr(self.model, "generation_config", None)
        if config is None and isinstance(self.model, Seq2SeqGenerationMixin):
            config = GenerationConfig()
        if isinstance(config, Mapping):
            config = GenerationConfig.from_dict(config)
        if config is None:
            return None
        if getattr(config, "max_new_tokens", None) is not None:
            return int(config.max_new_tokens) + 1
        max_length = getattr(config, "max_length", None)
        return int(max_length) if max_length is not None else None

    def _pad_labels(self, labels: Any, target: int | None) -> Any:
        if isinstance(labels, torch.Tensor) and labels.dim() == 2 and target is not None and labels.shape[-1] < target:
            return self._pad_tensors_to_max_len(labels, target)
        return labels

    def _pad_token_id(self) -> int:
        """The tokenizer's pad id (its EOS id when it has none), else the model's pad id
        (``generation_config``, attribute or ``config``).

        Raises:
            ValueError: When none is set.
        """
        tokenizer = self.tokenizer
        if tokenizer is not None and hasattr(tokenizer, "pad_token_id"):
            pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else getattr(tokenizer, "eos_token_id", None)
            if pad is not None:
                return int(pad)
        model = self.model
        for source in (getattr(model, "generation_config", None), getattr(model, "config", None), model):
            pad = source.get("pad_token_id") if isinstance(source, Mapping) else getattr(source, "pad_token_id", None)
            if pad is not None:
                return int(pad)
        raise ValueError(
            "Seq2SeqTrainer: cannot pad generated tokens: set pad_token_id on the tokenizer, in the model's "
            "config or generation_config, or as a model attribute."
        )

    def _pad_tensors_to_max_len(self, tensor: torch.Tensor, max_length: int) -> torch.Tensor:
        """Right-pad a ``[batch, length]`` tensor to ``max_length`` with the pad id."""
        padded = tensor.new_full((tensor.shape[0], max_length), self._pad_token_id())
        padded[:, : tensor.shape[-1]] = tensor
        return padded
