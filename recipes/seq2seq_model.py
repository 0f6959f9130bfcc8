"""A small encoder-decoder transformer for the sequence-to-sequence recipes.

`Seq2SeqTransformer` embeds source and target tokens with one shared embedding table
(plus learned positions), runs ``n_layer`` pre-norm encoder blocks and ``n_layer``
pre-norm decoder blocks (`torch.nn.TransformerEncoderLayer` / `TransformerDecoderLayer`,
causal self-attention in the decoder, cross-attention to the encoder output) and projects
to the vocabulary with an output head tied to the embedding.

It implements the contract of `toolkit.generation.Seq2SeqGenerationMixin`:
``encode(input_ids, attention_mask) -> memory`` and
``decode(decoder_input_ids, memory, memory_mask) -> logits``, so ``model.generate(...)``
(greedy or beam search) works and `toolkit.Seq2SeqTrainer` can evaluate with
``predict_with_generate=True``. ``forward(input_ids, attention_mask=None, labels=None)``
is teacher forcing: the decoder reads the labels shifted right behind the start token,
and the loss is the cross-entropy against the labels, ignoring ``-100``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from recipes.models import check_transformer_shape
from toolkit.generation import Seq2SeqGenerationMixin, shift_tokens_right

__all__ = ["Seq2SeqConfig", "Seq2SeqTransformer"]

IGNORE_INDEX = -100


@dataclass
class Seq2SeqConfig:
    """Shape and special tokens of a `Seq2SeqTransformer`.

    Args:
        vocab_size: Number of token ids (source and target share one vocabulary).
        max_positions: Longest source or target sequence the position embedding covers.
        n_layer: Blocks in the encoder, and again in the decoder.
        n_head: Attention heads per block; must divide ``d_model``.
        d_model: Width of the residual stream.
        d_ff: Hidden width of the feed-forward layers.
        dropout: Dropout probability inside the blocks.
        pad_token_id: Padding id (masked in the encoder, filled in after EOS).
        decoder_start_token_id: First decoder input (and first generated token).
        eos_token_id: Ends a target sequence.
    """

    vocab_size: int = 64
    max_positions: int = 32
    n_layer: int = 2
    n_head: int = 4
    d_model: int = 128
    d_ff: int = 512
    dropout: float = 0.0
    pad_token_id: int = 0
    decoder_start_token_id: int = 1
    eos_token_id: int = 2

    def __post_init__(self) -> None:
        check_transformer_shape(self, ("vocab_size", "max_positions", "n_layer", "n_head", "d_model", "d_ff"))
        for name in ("pad_token_id", "decoder_start_token_id", "eos_token_id"):
            if not 0 <= getattr(self, name) < self.vocab_size:
                raise ValueError(
                    f"{name} must be in [0, vocab_size={self.vocab_size}), got {getattr(self, name)}"
                )


class Seq2SeqTransformer(Seq2SeqGenerationMixin, nn.Module):
    """Encoder-decoder transformer with a shared, tied embedding; generates with toolkit.

    Args:
        config: The model shape and special token ids.

    Example:
        >>> import torch
        >>> model = Seq2SeqTransformer(Seq2SeqConfig(vocab_size=16, n_layer=1, d_model=32, d_ff=64))
        >>> src = torch.tensor([[5, 6, 7], [8, 9, 0]])
        >>> out = model(src, labels=torch.tensor([[3, 4, 2], [5, 2, -100]]))
        >>> out["logits"].shape, out["loss"].ndim
        (torch.Size([2, 3, 16]), 0)
        >>> tokens = model.generate(src, max_length=5)
        >>> tokens[:, 0].tolist(), tokens.shape[1] <= 5
        ([1, 1], True)
    """

    def __init__(self, config: Seq2SeqConfig) -> None:
        super().__init__()
        self.config = config
        self.pad_token_id = config.pad_token_id
        self.decoder_start_token_id = config.decoder_start_token_id
        self.eos_token_id = config.eos_token_id
        self.embed = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = nn.Embedding(config.max_positions, config.d_model)

        def block(kind: type[nn.Module]) -> nn.Module:
            return kind(
                config.d_model,
                config.n_head,
                config.d_ff,
                dropout=config.dropout,
                activation="gelu",
                batch_first=True,
                norm_first=True,
            )

        self.encoder = nn.TransformerEncoder(
            block(nn.TransformerEncoderLayer),
            config.n_layer,
            norm=nn.LayerNorm(config.d_model),
            enable_nested_tensor=False,
        )
        self.decoder = nn.TransformerDecoder(
            block(nn.TransformerDecoderLayer), config.n_layer, norm=nn.LayerNorm(config.d_model)
        )
        self.head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        self.head.weight = self.embed.weight
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if isinstance(module, nn.Linear) and module.bias is not None:
                nn.init.zeros_(module.bias)
        for name, param in self.named_parameters():  # attention input projections are raw parameters
            if name.endswith("in_proj_weight"):
                nn.init.normal_(param, mean=0.0, std=0.02)

    def num_parameters(self) -> int:
        """Number of distinct parameters (the tied head counted once)."""
        return sum(p.numel() for p in self.parameters())

    def _embed(self, ids: torch.Tensor) -> torch.Tensor:
        if ids.shape[1] > self.config.max_positions:
            raise ValueError(
                f"a sequence of {ids.shape[1]} tokens is longer than max_positions={self.config.max_positions}"
            )
        positions = torch.arange(ids.shape[1], device=ids.device)
        return self.embed(ids) + self.pos(positions)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Encoder states ``[batch, source length, d_model]``; padding (mask 0) is not attended."""
        return self.encoder(self._embed(input_ids), src_key_padding_mask=attention_mask == 0)

    def decode(
        self, decoder_input_ids: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor
    ) -> torch.Tensor:
        """Next-token logits ``[batch, target length, vocab]`` of every decoder position."""
        length = decoder_input_ids.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(length, device=decoder_input_ids.device)
        hidden = self.decoder(
            self._embed(decoder_input_ids),
            memory,
            tgt_mask=causal,
            tgt_is_causal=True,
            memory_key_padding_mask=memory_mask == 0,
        )
        return self.head(hidden)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        decoder_input_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Teacher-forced logits, and the loss when ``labels`` are given.

        Args:
            input_ids: Source ids ``[batch, source length]``.
            attention_mask: 1 on real source tokens, 0 on padding (built from the pad id
                when omitted).
            labels: Target ids ``[batch, target length]`` ending with EOS; ``-100`` is ignored.
            decoder_input_ids: Decoder inputs; the labels shifted right when omitted.

        Returns:
            ``{"logits"}``, plus ``"loss"`` (mean over the label tokens) with ``labels``.

        Raises:
            ValueError: If neither ``labels`` nor ``decoder_input_ids`` is given.
        """
        if attention_mask is None:
            attention_mask = input_ids.ne(self.config.pad_token_id).long()
        if decoder_input_ids is None:
            if labels is None:
                raise ValueError("forward needs labels or decoder_input_ids")
            decoder_input_ids = shift_tokens_right(
                labels, self.config.pad_token_id, self.config.decoder_start_token_id
            )
        logits = self.decode(decoder_input_ids, self.encode(input_ids, attention_mask), attention_mask)
        if labels is None:
            return {"logits": logits}
        loss = F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=IGNORE_INDEX)
        return {"loss": loss, "logits": logits}
