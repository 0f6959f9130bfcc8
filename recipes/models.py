"""Small models for the recipes: a decoder-only LM and two classifiers.

`DecoderLM` is a GPT-style model: token embedding plus learned position embedding,
``n_layer`` pre-norm blocks (causal self-attention through
`torch.nn.functional.scaled_dot_product_attention`, then a GELU MLP), a final
LayerNorm and an output head tied to the token embedding. ``forward(input_ids,
labels=None)`` returns ``{"loss", "logits"}`` with the usual causal LM loss: the
logits at position ``t`` predict ``labels[t + 1]``, and label ``-100`` is ignored.

`DigitsCNN` (image classification) and `BagOfEmbeddingsClassifier` (text
classification) return ``{"loss", "logits"}`` with the cross-entropy of class labels;
`classification_metrics` turns their eval predictions into accuracy and macro F1.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "BagOfEmbeddingsClassifier",
    "DecoderConfig",
    "DecoderLM",
    "DigitsCNN",
    "causal_lm_loss",
    "check_transformer_shape",
    "classification_metrics",
]

IGNORE_INDEX = -100


def check_transformer_shape(config: Any, positive: tuple[str, ...]) -> None:
    """Validate a transformer config: the ``positive`` fields > 0, ``n_head`` divides ``d_model``,
    ``dropout`` in [0, 1).

    Raises:
        ValueError: Naming the first field that is out of range.
    """
    for name in positive:
        if getattr(config, name) <= 0:
            raise ValueError(f"{name} must be a positive integer, got {getattr(config, name)}")
    if config.d_model % config.n_head:
        raise ValueError(f"d_model ({config.d_model}) must be divisible by n_head ({config.n_head})")
    if not 0.0 <= config.dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {config.dropout}")


@dataclass
class DecoderConfig:
    """Shape of a `DecoderLM`.

    Args:
        vocab_size: Number of token ids.
        block_size: Longest sequence the position embedding covers.
        n_layer: Number of transformer blocks.
        n_head: Attention heads per block; must divide ``d_model``.
        d_model: Width of the residual stream.
        dropout: Dropout on embeddings, attention weights and residual branches.
    """

    vocab_size: int = 256
    block_size: int = 128
    n_layer: int = 4
    n_head: int = 4
    d_model: int = 128
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_transformer_shape(self, ("vocab_size", "block_size", "n_layer", "n_head", "d_model"))


def causal_lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of ``logits[:, t]`` against ``labels[:, t + 1]``, skipping -100."""
    shift_logits = logits[:, :-1, :].reshape(-1, logits.size(-1))
    shift_labels = labels[:, 1:].reshape(-1)
    return F.cross_entropy(shift_logits.float(), shift_labels, ignore_index=IGNORE_INDEX)


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention (fused QKV projection, SDPA kernel)."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model)
        self.proj = nn.Linear(config.d_model, config.d_model)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, time, width = x.shape
        q, k, v = self.qkv(x).split(width, dim=-1)
        q, k, v = (t.view(batch, time, self.n_head, width // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )
        y = y.transpose(1, 2).reshape(batch, time, width)
        return self.resid_dropout(self.proj(y))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = nn.Sequential(
            nn.Linear(config.d_model, 4 * config.d_model),
            nn.GELU(),
            nn.Linear(4 * config.d_model, config.d_model),
            nn.Dropout(config.dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class DecoderLM(nn.Module):
    """Decoder-only transformer LM with a tied output head.

    Args:
        config: The model shape.

    Example:
        >>> import torch
        >>> model = DecoderLM(DecoderConfig(block_size=16, n_layer=1, n_head=2, d_model=32))
        >>> ids = torch.randint(0, 256, (2, 16))
        >>> out = model(ids, labels=ids)
        >>> out["logits"].shape, out["loss"].ndim
        (torch.Size([2, 16, 256]), 0)
    """

    def __init__(self, config: DecoderConfig) -> None:
        super().__init__()
        self.config = config
        self.tok_emb = nn.Embedding(config.vocab_size, config.d_model)
        self.pos_emb = nn.Embedding(config.block_size, config.d_model)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.lm_head.weight = self.tok_emb.weight
        self.apply(self._init_weights)
        # GPT-2: scale the residual output projections by 1/sqrt(2 * n_layer).
        for name, param in self.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.2.weight")):
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        """Number of distinct parameters (the tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Return ``{"logits"}``, plus ``"loss"`` when ``labels`` are given.

        Args:
            input_ids: ``(batch, time)`` token ids, ``time <= config.block_size``.
            labels: ``(batch, time)`` target ids (usually ``input_ids``); -100 is ignored.

        Raises:
            ValueError: If the sequence is longer than ``config.block_size``.
        """
        time = input_ids.size(1)
        if time > self.config.block_size:
            raise ValueError(
                f"input_ids has {time} positions; the model's block_size is {self.config.block_size}"
            )
        positions = torch.arange(time, device=input_ids.device)
        x = self.drop(self.tok_emb(input_ids) + self.pos_emb(positions))
        for block in self.blocks:
            x = block(x)
        logits = self.lm_head(self.ln_f(x))
        out = {"logits": logits}
        if labels is not None:
            out = {"loss": causal_lm_loss(logits, labels), "logits": logits}
        return out

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend ``input_ids`` by ``max_new_tokens`` tokens.

        Args:
            input_ids: ``(batch, time)`` prompt ids.
            max_new_tokens: How many tokens to append.
            temperature: Divides the logits before sampling.
            top_k: Sample among the ``top_k`` likeliest tokens; ``None`` or ``0`` is greedy.
            generator: Random generator for sampling (seeded by the caller).

        Returns:
            ``(batch, time + max_new_tokens)`` ids.
        """
        was_training = self.training
        self.eval()
        ids = input_ids
        for _ in range(max_new_tokens):
            context = ids[:, -self.config.block_size :]
            logits = self(context)["logits"][:, -1, :].float()
            if not top_k:
                next_id = logits.argmax(dim=-1, keepdim=True)
            else:
                values, indices = torch.topk(logits / temperature, min(top_k, logits.size(-1)))
                probs = torch.softmax(values, dim=-1)
                next_id = indices.gather(-1, torch.multinomial(probs, 1, generator=generator))
            ids = torch.cat([ids, next_id], dim=1)
        self.train(was_training)
        return ids


# --------------------------------------------------------------------------- classifiers
def _classifier_output(logits: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
    if labels is None:
        return {"logits": logits}
    return {"loss": F.cross_entropy(logits.float(), labels), "logits": logits}


class DigitsCNN(nn.Module):
    """A small convolutional classifier for one-channel images (the 8x8 digits).

    Two 3x3 convolutions (``channels`` and ``2 * channels`` feature maps, ReLU, same
    padding), a 2x2 max pool, then a hidden layer of ``hidden_size`` and the class head.

    Args:
        num_labels: Number of classes.
        image_size: Height and width of the (square) images; must be even.
        channels: Feature maps of the first convolution.
        hidden_size: Width of the hidden layer.
        dropout: Dropout before the class head.

    Example:
        >>> model = DigitsCNN(num_labels=10)
        >>> out = model(torch.zeros(4, 1, 8, 8), labels=torch.tensor([0, 1, 2, 3]))
        >>> out["logits"].shape, out["loss"].ndim
        (torch.Size([4, 10]), 0)
    """

    def __init__(
        self,
        num_labels: int = 10,
        image_size: int = 8,
        channels: int = 16,
        hidden_size: int = 64,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        for name, value in (("num_labels", num_labels), ("channels", channels), ("hidden_size", hidden_size)):
            if value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if image_size <= 0 or image_size % 2:
            raise ValueError(f"image_size must be a positive even integer, got {image_size}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(channels, 2 * channels, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Flatten(),
        )
        self.head = nn.Sequential(
            nn.Linear(2 * channels * (image_size // 2) ** 2, hidden_size),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_size, num_labels),
        )

    def forward(
        self, pixel_values: torch.Tensor, labels: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """Return ``{"logits"}`` for ``(batch, 1, H, W)`` images, plus ``"loss"`` with ``labels``."""
        return _classifier_output(self.head(self.features(pixel_values)), labels)


class BagOfEmbeddingsClassifier(nn.Module):
    """A fastText-style text classifier: the mean of the token embeddings, then a linear head.

    Padding positions (``attention_mask == 0``) are left out of the mean.

    Args:
        vocab_size: Number of token ids.
        num_labels: Number of classes.
        embed_dim: Width of the token embeddings.
        dropout: Dropout on the pooled vector.
        pad_token_id: Id of the padding token (its embedding is kept at zero).

    Example:
        >>> model = BagOfEmbeddingsClassifier(vocab_size=50, num_labels=3)
        >>> ids = torch.tensor([[5, 6, 7], [8, 0, 0]])
        >>> out = model(ids, attention_mask=(ids != 0).long(), labels=torch.tensor([0, 2]))
        >>> out["logits"].shape, out["loss"].ndim
        (torch.Size([2, 3]), 0)
    """

    def __init__(
        self,
        vocab_size: int,
        num_labels: int,
        embed_dim: int = 64,
        dropout: float = 0.1,
        pad_token_id: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("vocab_size", vocab_size), ("num_labels", num_labels), ("embed_dim", embed_dim)):
            if value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.pad_token_id = pad_token_id
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_token_id)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(embed_dim, num_labels)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Return ``{"logits"}`` for ``(batch, time)`` ids, plus ``"loss"`` with ``labels``."""
        if attention_mask is None:
            attention_mask = (input_ids != self.pad_token_id).long()
        mask = attention_mask.unsqueeze(-1).to(self.embed.weight.dtype)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return _classifier_output(self.head(self.drop(pooled)), labels)


def classification_metrics(num_classes: int) -> Callable[[Any], dict[str, float]]:
    """A ``compute_metrics`` function: accuracy and macro F1 (torchmetrics) of class logits.

    Args:
        num_classes: Number of classes.

    Returns:
        A function of an `EvalPrediction` (``(logits, labels)``) returning
        ``{"accuracy", "f1"}`` (the F1 is the unweighted mean over the classes).
    """
    from torchmetrics.functional.classification import multiclass_accuracy, multiclass_f1_score

    def compute_metrics(eval_pred: Any) -> dict[str, float]:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        if isinstance(logits, (tuple, list)):
            logits = logits[0]
        preds = torch.as_tensor(logits).argmax(-1)
        target = torch.as_tensor(labels).long()
        kwargs = {"num_classes": num_classes}
        return {
            "accuracy": float(multiclass_accuracy(preds, target, average="micro", **kwargs)),
            "f1": float(multiclass_f1_score(preds, target, average="macro", **kwargs)),
        }

    return compute_metrics
