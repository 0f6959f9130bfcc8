"""Greedy and beam-search generation for plain `nn.Module` encoder-decoders.

`Seq2SeqTrainer` with ``predict_with_generate=True`` calls ``model.generate(...)``. A
`transformers` model brings its own; any other encoder-decoder gets one here, so that
generation-based evaluation works without `transformers` installed:

* `Seq2SeqGenerationMixin`: inherit it in your `nn.Module` next to ``encode`` and
  ``decode`` methods and the model has a ``generate`` method.
* `generate`: the same as a free function, for any model with ``encode`` / ``decode``.
* `GenerationConfig`: the generation settings as a small dataclass (``from_dict``,
  ``to_dict``, ``from_pretrained`` / ``save_pretrained`` of a ``generation_config.json``).

The model contract:

* ``encode(input_ids, attention_mask) -> memory``: run once per call. ``memory`` is a
  tensor (batch first) or a tuple / list / dict of them.
* ``decode(decoder_input_ids, memory, memory_mask) -> logits``: the logits of every
  decoder position (``[batch, length, vocab]``) or of the last one (``[batch, vocab]``);
  a dict or object with ``logits`` works too. ``memory_mask`` is the encoder attention
  mask. There is no key/value cache: step ``t`` decodes the whole prefix again, which is
  fine for the small models this is meant for.
* token ids ``decoder_start_token_id``, ``eos_token_id``, ``pad_token_id``: looked up in
  this order: the keyword arguments of the call, the ``generation_config`` passed or
  ``model.generation_config``, then attributes of the model, then ``model.config``.

The output follows the `transformers` convention: a ``LongTensor [batch, <= max_length]``
starting with the decoder start token; a sequence that ended with EOS is filled with
``pad_token_id`` after it; the width is that of the longest sequence.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import torch

__all__ = [
    "GenerationConfig",
    "Seq2SeqGenerationMixin",
    "generate",
    "greedy_search",
    "beam_search",
    "resolve_generation_config",
    "shift_tokens_right",
    "GENERATION_CONFIG_NAME",
]

logger = logging.getLogger(__name__)

GENERATION_CONFIG_NAME = "generation_config.json"

_TOKEN_FIELDS = ("decoder_start_token_id", "bos_token_id", "eos_token_id", "pad_token_id")

# Settings of a `transformers` generation config that change the result and that this
# module does not implement: a value other than the neutral one is an error, not a
# silently different output. Other unknown keys are kept in ``extra`` and ignored.
_UNSUPPORTED = {
    "do_sample": lambda v: not v,
    "num_return_sequences": lambda v: v in (None, 1),
    "num_beam_groups": lambda v: v in (None, 1),
    "repetition_penalty": lambda v: v in (None, 1.0),
    "no_repeat_ngram_size": lambda v: v in (None, 0),
    "forced_bos_token_id": lambda v: v is None,
    "forced_eos_token_id": lambda v: v is None,
    "bad_words_ids": lambda v: not v,
    "force_words_ids": lambda v: not v,
    "suppress_tokens": lambda v: not v,
    "begin_suppress_tokens": lambda v: not v,
}

EosIds = Union[int, Sequence[int], None]


@dataclass
class GenerationConfig:
    """The settings of `generate` (a small stand-in for `transformers.GenerationConfig`).

    Args:
        max_length: The longest output, counting the decoder start token.
        max_new_tokens: Tokens to generate after the start token; when set it wins over
            ``max_length`` (which becomes ``max_new_tokens + 1``).
        min_length: EOS is forbidden while the output is shorter than this (start token
            counted).
        num_beams: 1 is greedy decoding; more is beam search with that many beams.
        length_penalty: Beam search ranks a finished sequence by
            ``sum of log-probabilities / length ** length_penalty`` (length counts the
            start token, not the EOS): > 0 favours longer sequences, < 0 shorter ones.
        early_stopping: Beam search stops a batch item when ``num_beams`` sequences are
            finished (``True``); when a cheap estimate says no running beam can beat
            them (``False``); or when no running beam can, by an exact bound (``"never"``).
        decoder_start_token_id: First token of every output (falls back to ``bos_token_id``).
        bos_token_id: Beginning-of-sequence id.
        eos_token_id: End-of-sequence id, or a list of ids that each end a sequence.
        pad_token_id: Fills the output after EOS (falls back to the EOS id).
        extra: Keys this class does not know (e.g. from a `transformers` config file),
            kept so that `to_dict` gives them back; ignored by `generate` unless they ask
            for something it does not implement (sampling, ...), which is an error.

    Raises:
        ValueError: For a setting out of range, naming it and the accepted values.

    Example:
        >>> cfg = GenerationConfig.from_dict({"max_length": 8, "num_beams": 2, "do_sample": False})
        >>> cfg.max_length, cfg.num_beams, cfg.extra
        (8, 2, {'do_sample': False})
        >>> GenerationConfig.from_dict(cfg.to_dict()) == cfg
        True
    """

    max_length: int = 20
    max_new_tokens: int | None = None
    min_length: int = 0
    num_beams: int = 1
    length_penalty: float = 1.0
    early_stopping: bool | str = False
    decoder_start_token_id: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Check every setting.

        Raises:
            ValueError: For a setting out of range, naming it and the accepted values.
        """
        _check_int("max_length", self.max_length, 1)
        if self.max_new_tokens is not None:
            _check_int("max_new_tokens", self.max_new_tokens, 1)
        _check_int("min_length", self.min_length, 0)
        _check_int("num_beams", self.num_beams, 1)
        if isinstance(self.length_penalty, bool) or not isinstance(self.length_penalty, (int, float)):
            raise ValueError(f"length_penalty must be a number, got {self.length_penalty!r}")
        if not (self.early_stopping is True or self.early_stopping is False or self.early_stopping == "never"):
            raise ValueError(f"early_stopping must be True, False or 'never', got {self.early_stopping!r}")
        for name in ("decoder_start_token_id", "bos_token_id", "pad_token_id"):
            value = getattr(self, name)
            if value is not None:
                _check_int(name, value, 0)
        for eos in _as_list(self.eos_token_id):
            _check_int("eos_token_id", eos, 0)

    @classmethod
    def from_dict(cls, config: Mapping[str, Any], **kwargs: Any) -> GenerationConfig:
        """Build a config from a dict (and keyword overrides); unknown keys go to ``extra``.

        Args:
            config: Settings, e.g. the content of a ``generation_config.json``.
            **kwargs: Settings that replace those of ``config``.

        Returns:
            The config.
        """
        values = {**dict(config), **kwargs}
        extra = dict(values.pop("extra", None) or {})
        known = {f.name for f in dataclasses.fields(cls)}
        extra.update({k: values.pop(k) for k in list(values) if k not in known})
        return cls(**values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """All settings as a flat JSON-ready dict (``extra`` keys merged in)."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "extra"}
        out.update(copy.deepcopy(self.extra))
        return out

    def update(self, **kwargs: Any) -> dict[str, Any]:
        """Set the known settings among ``kwargs``; returns the others, untouched.

        Raises:
            ValueError: When a new value is out of range (the config is left unchanged).
        """
        known = {f.name for f in dataclasses.fields(self)} - {"extra"}
        trial = dataclasses.replace(self, **{k: v for k, v in kwargs.items() if k in known})
        for name in known:
            setattr(self, name, getattr(trial, name))
        return {k: v for k, v in kwargs.items() if k not in known}

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike, config_file_name: str | None = None, **kwargs: Any
    ) -> GenerationConfig:
        """Read a config from a JSON file, or from ``generation_config.json`` in a folder.

        Args:
            path: A folder, or the JSON file itself.
            config_file_name: The file name inside ``path`` (default ``generation_config.json``).
            **kwargs: Settings that replace those read.

        Raises:
            FileNotFoundError: When there is no such file.
        """
        file = Path(path)
        if config_file_name is not None or file.is_dir():
            file = file / (config_file_name or GENERATION_CONFIG_NAME)
        if not file.is_file():
            raise FileNotFoundError(f"generation config: no file at {str(file)!r}")
        with open(file, encoding="utf-8") as fh:
            return cls.from_dict(json.load(fh), **kwargs)

    def save_pretrained(self, save_directory: str | os.PathLike, config_file_name: str | None = None) -> str:
        """Write ``generation_config.json`` (or ``config_file_name``) into a folder; returns its path."""
        os.makedirs(save_directory, exist_ok=True)
        file = os.path.join(save_directory, config_file_name or GENERATION_CONFIG_NAME)
        with open(file, "w", encoding="utf-8") as fh:
            json.dump(self.to_dict(), fh, indent=2, sort_keys=True)
            fh.write("\n")
        return file


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _as_list(eos: EosIds) -> list[int]:
    if eos is None:
        return []
    if isinstance(eos, int):
        return [eos]
    return [int(e) for e in eos]


def _model_value(model: Any, name: str) -> Any:
    value = getattr(model, name, None)
    if value is None:
        value = getattr(getattr(model, "config", None), name, None)
    return value


def resolve_generation_config(
    model: Any, generation_config: Any = None, **kwargs: Any
) -> GenerationConfig:
    """The settings a `generate` call runs with, every token id filled in.

    Priority: ``kwargs`` (``None`` values are skipped), then ``generation_config`` (or
    ``model.generation_config``), then attributes of ``model``, then ``model.config``.
    A config object of another class (e.g. `transformers.GenerationConfig`) is read
    through its ``to_dict``.

    Args:
        model: The model (only its attributes are read).
        generation_config: A `GenerationConfig`, a dict, or an object with ``to_dict``.
        **kwargs: Settings for this call (``max_length``, ``num_beams``, ...).

    Returns:
        A new `GenerationConfig`; the model's own is never changed.

    Raises:
        TypeError: For a keyword that is not a generation setting.
        ValueError: For a value out of range, or no decoder start token anywhere.
        NotImplementedError: When the config asks for something `generate` does not do
            (sampling, several returned sequences, repetition penalties, ...).

    Example:
        >>> class M:
        ...     decoder_start_token_id, eos_token_id, pad_token_id = 1, 2, 0
        >>> cfg = resolve_generation_config(M(), {"num_beams": 3}, max_length=5)
        >>> cfg.max_length, cfg.num_beams, cfg.decoder_start_token_id, cfg.eos_token_id
        (5, 3, 1, 2)
    """
    base = generation_config if generation_config is not None else getattr(model, "generation_config", None)
    if base is None:
        config = GenerationConfig()
    elif isinstance(base, GenerationConfig):
        config = copy.deepcopy(base)
    elif isinstance(base, Mapping):
        config = GenerationConfig.from_dict(base)
    elif callable(getattr(base, "to_dict", None)):
        config = GenerationConfig.from_dict(base.to_dict())
    else:
        raise TypeError(
            f"generation_config must be a GenerationConfig, a dict or an object with to_dict(); "
            f"got {type(base).__name__}"
        )
    unknown = config.update(**{k: v for k, v in kwargs.items() if v is not None})
    if unknown:
        accepted = sorted(f.name for f in dataclasses.fields(GenerationConfig) if f.name != "extra")
        raise TypeError(f"generate() got unknown settings {sorted(unknown)}; accepted: {accepted}")
    for name in _TOKEN_FIELDS:
        if getattr(config, name) is None:
            setattr(config, name, _model_value(model, name))
    if config.decoder_start_token_id is None:
        config.decoder_start_token_id = config.bos_token_id
    if config.decoder_start_token_id is None:
        raise ValueError(
            "generate: no decoder start token: pass decoder_start_token_id=..., set it in the "
            "generation config, or give the model a `decoder_start_token_id` (or `bos_token_id`) attribute."
        )
    if config.pad_token_id is None and config.eos_token_id is not None:
        config.pad_token_id = _as_list(config.eos_token_id)[0]
    for key, neutral in _UNSUPPORTED.items():
        if key in config.extra and not neutral(config.extra[key]):
            raise NotImplementedError(
                f"generation setting {key}={config.extra[key]!r} is not supported by toolkit's generate "
                "(greedy and beam search only); remove it, or use a transformers model and its generate."
            )
    config.validate()
    return config


def shift_tokens_right(labels: torch.Tensor, pad_token_id: int, decoder_start_token_id: int) -> torch.Tensor:
    """Decoder inputs for teacher forcing: labels moved one step right behind the start token.

    Label positions marked ``-100`` (ignored by the loss) become ``pad_token_id``.

    Example:
        >>> shift_tokens_right(torch.tensor([[5, 6, 2, -100]]), pad_token_id=0, decoder_start_token_id=1)
        tensor([[1, 5, 6, 2]])
    """
    shifted = labels.new_full(labels.shape, pad_token_id)
    shifted[:, 1:] = labels[:, :-1]
    shifted[:, 0] = decoder_start_token_id
    return shifted.masked_fill(shifted == -100, pad_token_id)


# ----------------------------------------------------------------------------- search


def _repeat_batch(tree: Any, times: int) -> Any:
    """Repeat every batch row ``times`` times in place (row ``i`` -> rows ``i*times ...``)."""
    if tree is None or times == 1:
        return tree
    if isinstance(tree, torch.Tensor):
        return tree.repeat_interleave(times, dim=0)
    if isinstance(tree, Mapping):
        return type(tree)({k: _repeat_batch(v, times) for k, v in tree.items()})
    if isinstance(tree, (tuple, list)):
        items = [_repeat_batch(v, times) for v in tree]
        return type(tree)(*items) if hasattr(tree, "_fields") else type(tree)(items)
    return tree


def _next_token_logits(model: Any, seq: torch.Tensor, memory: Any, mask: torch.Tensor | None) -> torch.Tensor:
    out = model.decode(seq, memory, mask)
    if isinstance(out, Mapping):
        out = out["logits"]
    elif not isinstance(out, torch.Tensor):
        out = out.logits
    if out.dim() == 3:
        out = out[:, -1]
    return out.float()


def _encode(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor | None, config: GenerationConfig):
    for name in ("encode", "decode"):
        if not callable(getattr(model, name, None)):
            raise TypeError(
                f"generate needs a model with encode(input_ids, attention_mask) and "
                f"decode(decoder_input_ids, memory, memory_mask) methods; {type(model).__name__} has no {name!r}"
            )
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2:
        got = tuple(input_ids.shape) if isinstance(input_ids, torch.Tensor) else type(input_ids).__name__
        raise ValueError(f"generate: input_ids must be a 2-D tensor [batch, length], got {got}")
    eos = _as_list(config.eos_token_id)
    pad = config.pad_token_id
    if attention_mask is None:
        if pad is not None and pad not in eos and bool((input_ids == pad).any()):
            attention_mask = input_ids.ne(pad).long()
        else:
            attention_mask = torch.ones_like(input_ids)
    return model.encode(input_ids, attention_mask), attention_mask


def _length_limit(config: GenerationConfig) -> int:
    return config.max_new_tokens + 1 if config.max_new_tokens is not None else config.max_length


def _ban_eos(scores: torch.Tensor, eos: list[int], cur_len: int, min_length: int) -> torch.Tensor:
    if eos and cur_len < min_length:
        scores[:, eos] = -float("inf")
    return scores


def greedy_search(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    generation_config: GenerationConfig | None = None,
    synced_gpus: bool = False,
) -> torch.Tensor:
    """Pick the most likely next token at every step.

    Args:
        model: An encoder-decoder with ``encode`` / ``decode`` (see the module docstring).
        input_ids: Encoder inputs ``[batch, length]``.
        attention_mask: Encoder mask (built from ``pad_token_id`` when omitted).
        generation_config: Resolved settings (`resolve_generation_config`); the model's
            when omitted. ``num_beams`` is not read.
        synced_gpus: Keep decoding until the length limit even when every sequence has
            ended, so that all ranks run the same number of forward passes (needed when
            parameters are sharded, e.g. DeepSpeed ZeRO-3).

    Returns:
        ``LongTensor [batch, <= max_length]``: start token, tokens, EOS, then padding.
    """
    config = generation_config if generation_config is not None else resolve_generation_config(model)
    eos = _as_list(config.eos_token_id)
    limit = _length_limit(config)
    with torch.no_grad():
        memory, mask = _encode(model, input_ids, attention_mask, config)
        batch = input_ids.shape[0]
        seq = torch.full((batch, 1), config.decoder_start_token_id, dtype=torch.long, device=input_ids.device)
        eos_t = torch.tensor(eos, dtype=torch.long, device=seq.device)
        running = torch.ones(batch, dtype=torch.bool, device=seq.device)
        while seq.shape[1] < limit:
            scores = _ban_eos(_next_token_logits(model, seq, memory, mask), eos, seq.shape[1], config.min_length)
            nxt = scores.argmax(dim=-1)
            if eos:
                nxt = torch.where(running, nxt, torch.full_like(nxt, config.pad_token_id))
                running &= ~torch.isin(nxt, eos_t)
            seq = torch.cat([seq, nxt[:, None]], dim=1)
            if eos and not synced_gpus and not bool(running.any()):
                break
    return seq


class _Finished:
    """The best ``num_beams`` finished sequences of one batch item, with their scores."""

    def __init__(self, num_beams: int, length_penalty: float, early_stopping: bool | str, limit: int) -> None:
        self.num_beams = num_beams
        self.length_penalty = length_penalty
        self.early_stopping = early_stopping
        self.limit = limit
        self.items: list[tuple[float, torch.Tensor]] = []

    def score(self, sum_logprobs: float, length: int) -> float:
        return sum_logprobs / (length**self.length_penalty)

    @property
    def worst(self) -> float:
        return min(s for s, _ in self.items)

    def add(self, tokens: torch.Tensor, sum_logprobs: float) -> None:
        score = self.score(sum_logprobs, tokens.shape[-1])
        if len(self.items) < self.num_beams or score > self.worst:
            self.items.append((score, tokens))
            if len(self.items) > self.num_beams:
                self.items.remove(min(self.items, key=lambda item: item[0]))

    def is_done(self, best_running: float, cur_len: int) -> bool:
        if len(self.items) < self.num_beams:
            return False
        if self.early_stopping is True:
            return True
        if self.early_stopping == "never" and self.length_penalty > 0:
            bound = self.score(best_running, self.limit)  # the longest continuation scores highest
        else:
            bound = self.score(best_running, cur_len)
        return self.worst >= bound

    def best(self) -> torch.Tensor:
        return max(self.items, key=lambda item: item[0])[1]


def beam_search(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    generation_config: GenerationConfig | None = None,
    synced_gpus: bool = False,
) -> torch.Tensor:
    """Keep the ``num_beams`` best prefixes at every step; return the best finished one.

    At each step every running beam is extended by every token, the candidates are
    ranked by summed log-probability, and the best ``num_beams`` that do not end with EOS
    go on. A candidate ending with EOS that ranks within the best ``num_beams`` is a
    finished sequence, scored ``sum_logprobs / length ** length_penalty``. A batch item
    stops according to ``early_stopping``; at the length limit its running beams count
    as finished too. The best finished sequence of each item is returned.

    Args:
        model: An encoder-decoder with ``encode`` / ``decode`` (see the module docstring).
        input_ids: Encoder inputs ``[batch, length]``.
        attention_mask: Encoder mask (built from ``pad_token_id`` when omitted).
        generation_config: Resolved settings (`resolve_generation_config`); the model's
            when omitted.
        synced_gpus: Run every step up to the length limit (see `greedy_search`).

    Returns:
        ``LongTensor [batch, <= max_length]``: start token, tokens, EOS, then padding.
    """
    config = generation_config if generation_config is not None else resolve_generation_config(model)
    beams = config.num_beams
    eos = _as_list(config.eos_token_id)
    eos_set = set(eos)
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    limit = _length_limit(config)
    with torch.no_grad():
        memory, mask = _encode(model, input_ids, attention_mask, config)
        batch, device = input_ids.shape[0], input_ids.device
        memory, mask = _repeat_batch(memory, beams), _repeat_batch(mask, beams)
        seq = torch.full((batch * beams, 1), config.decoder_start_token_id, dtype=torch.long, device=device)
        # all beams start equal: only the first may be extended, or the beams would be copies
        beam_scores = torch.zeros(batch, beams, dtype=torch.float32, device=device)
        beam_scores[:, 1:] = -1e9
        beam_scores = beam_scores.view(-1)
        finished = [_Finished(beams, config.length_penalty, config.early_stopping, limit) for _ in range(batch)]
        done = [False] * batch
        while seq.shape[1] < limit:
            cur_len = seq.shape[1]
            logits = _next_token_logits(model, seq, memory, mask)
            logprobs = _ban_eos(torch.log_softmax(logits, dim=-1), eos, cur_len, config.min_length)
            vocab = logprobs.shape[-1]
            candidates = (logprobs + beam_scores[:, None]).view(batch, beams * vocab)
            k = min(max(2, 1 + len(eos)) * beams, beams * vocab)
            top_scores, top_index = candidates.topk(k, dim=1)
            scores_l, tokens_l = top_scores.tolist(), (top_index % vocab).tolist()
            sources_l = (top_index // vocab).tolist()
            next_scores = [[0.0] * beams for _ in range(batch)]
            next_tokens = [[pad] * beams for _ in range(batch)]
            next_rows = [[b * beams] * beams for b in range(batch)]
            for b in range(batch):
                if done[b]:
                    continue
                j = 0
                for rank in range(k):
                    token, score, row = tokens_l[b][rank], scores_l[b][rank], b * beams + sources_l[b][rank]
                    if token in eos_set:
                        if rank < beams:
                            finished[b].add(seq[row].clone(), score)
                        continue
                    next_scores[b][j], next_tokens[b][j], next_rows[b][j] = score, token, row
                    j += 1
                    if j == beams:
                        break
                done[b] = finished[b].is_done(max(next_scores[b]), cur_len)
            rows = torch.tensor(next_rows, device=device).view(-1)
            tokens = torch.tensor(next_tokens, dtype=torch.long, device=device).view(-1, 1)
            seq = torch.cat([seq[rows], tokens], dim=1)
            beam_scores = torch.tensor(next_scores, dtype=torch.float32, device=device).view(-1)
            if all(done) and not synced_gpus:
                break
        final_scores = beam_scores.tolist()
        for b in range(batch):
            if not done[b]:
                for i in range(beams):
                    finished[b].add(seq[b * beams + i], final_scores[b * beams + i])
        best = [finished[b].best() for b in range(batch)]
        width = min(max(t.shape[0] for t in best) + 1, limit)
        out = torch.full((batch, width), pad, dtype=torch.long, device=device)
        for b, tokens in enumerate(best):
            out[b, : tokens.shape[0]] = tokens
            if tokens.shape[0] < limit and eos:
                out[b, tokens.shape[0]] = eos[0]
    return out


def generate(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    *,
    generation_config: GenerationConfig | Mapping[str, Any] | None = None,
    max_length: int | None = None,
    max_new_tokens: int | None = None,
    min_length: int | None = None,
    num_beams: int | None = None,
    length_penalty: float | None = None,
    early_stopping: bool | str | None = None,
    decoder_start_token_id: int | None = None,
    eos_token_id: EosIds = None,
    pad_token_id: int | None = None,
    synced_gpus: bool = False,
) -> torch.Tensor:
    """Generate output sequences with an encoder-decoder: greedy, or beam search.

    Every setting left ``None`` comes from ``generation_config`` (or the model's
    ``generation_config``), then from the model's attributes or ``config`` (token ids);
    see `resolve_generation_config` and `GenerationConfig` for their meaning.

    Args:
        model: Any object with ``encode`` and ``decode`` (see the module docstring).
        input_ids: Encoder inputs ``[batch, length]``.
        attention_mask: Encoder mask; when omitted, positions equal to ``pad_token_id``
            are masked (if there are any and the pad id is not an EOS id).
        generation_config: Base settings for this call.
        max_length: The longest output, start token included.
        max_new_tokens: Tokens after the start token (wins over ``max_length``).
        min_length: No EOS before this length.
        num_beams: 1 (greedy) or more (beam search).
        length_penalty: Exponent of the length normalisation of beam search.
        early_stopping: ``True``, ``False`` or ``"never"`` (beam search).
        decoder_start_token_id: The first token of every output.
        eos_token_id: The id (or ids) that end a sequence.
        pad_token_id: The id that fills the output after EOS.
        synced_gpus: Always run up to the length limit (sharded parameters).

    Returns:
        ``LongTensor [batch, <= max_length]`` starting with the decoder start token, and
        padded with ``pad_token_id`` after EOS.

    Raises:
        TypeError: When the model has no ``encode`` / ``decode``.
        ValueError: For a bad setting or input shape, or no decoder start token.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class Echo(nn.Module):  # predicts token (last + 1), EOS (id 2) after 5
        ...     def encode(self, input_ids, attention_mask):
        ...         return input_ids
        ...     def decode(self, decoder_input_ids, memory, memory_mask):
        ...         nxt = decoder_input_ids[:, -1] + 1
        ...         nxt = torch.where(nxt > 5, torch.full_like(nxt, 2), nxt)
        ...         return nn.functional.one_hot(nxt, 8).float()
        >>> ids = torch.tensor([[7, 7], [7, 7]])
        >>> tokens = dict(decoder_start_token_id=3, eos_token_id=2, pad_token_id=0)
        >>> generate(Echo(), ids, **tokens)
        tensor([[3, 4, 5, 2],
                [3, 4, 5, 2]])
        >>> generate(Echo(), ids, max_length=3, num_beams=2, **tokens)
        tensor([[3, 4, 5],
                [3, 4, 5]])
    """
    config = resolve_generation_config(
        model, generation_config, max_length=max_length, max_new_tokens=max_new_tokens, min_length=min_length,
        num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping,
        decoder_start_token_id=decoder_start_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
    )
    search = greedy_search if config.num_beams == 1 else beam_search
    return search(model, input_ids, attention_mask, generation_config=config, synced_gpus=synced_gpus)


class Seq2SeqGenerationMixin:
    """Gives an encoder-decoder `nn.Module` a ``generate`` method (greedy / beam search).

    Inherit it next to `nn.Module` and define ``encode(input_ids, attention_mask)`` and
    ``decode(decoder_input_ids, memory, memory_mask)`` and the token ids
    (``decoder_start_token_id``, ``eos_token_id``, ``pad_token_id`` as attributes, in a
    ``config``, or in a ``generation_config``). That is all `Seq2SeqTrainer` needs for
    ``predict_with_generate=True`` without `transformers`.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class TinySeq2Seq(Seq2SeqGenerationMixin, nn.Module):
        ...     decoder_start_token_id, eos_token_id, pad_token_id = 1, 2, 0
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.emb = nn.Embedding(6, 4)
        ...         self.out = nn.Linear(4, 6)
        ...     def encode(self, input_ids, attention_mask):
        ...         return self.emb(input_ids).mean(1, keepdim=True)
        ...     def decode(self, decoder_input_ids, memory, memory_mask):
        ...         return self.out(self.emb(decoder_input_ids) + memory)
        >>> _ = torch.manual_seed(0)
        >>> out = TinySeq2Seq().generate(torch.tensor([[3, 4, 5]]), max_length=6, num_beams=2)
        >>> out.dtype, out[0, 0].item(), out.shape[1] <= 6
        (torch.int64, 1, True)
    """

    def generate(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        generation_config: GenerationConfig | Mapping[str, Any] | None = None,
        synced_gpus: bool = False,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Generate with this model; the keyword settings are those of `generate`.

        Raises:
            TypeError: For a keyword that is neither a generation setting nor an input
                this method takes (e.g. an extra batch column).
        """
        if input_ids is None:
            input_ids = kwargs.pop("inputs", None)
        if input_ids is None:
            raise ValueError("generate: input_ids is required")
        allowed = {f.name for f in dataclasses.fields(GenerationConfig)} - {"extra", "bos_token_id"}
        unknown = sorted(set(kwargs) - allowed)
        if unknown:
            raise TypeError(
                f"{type(self).__name__}.generate() got unexpected arguments {unknown}; it takes input_ids, "
                f"attention_mask, generation_config, synced_gpus and the settings {sorted(allowed)}"
            )
        return generate(
            self, input_ids, attention_mask, generation_config=generation_config, synced_gpus=synced_gpus, **kwargs
        )
