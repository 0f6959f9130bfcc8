"""Small `transformers` models for the recipes' ``--model_type`` option.

Each builder makes a small, randomly initialised model of one family from its
``transformers`` config (nothing is downloaded), shaped for a recipe's vocabulary and
sequence length. One function per family; a new family is one more function here and a
name in the recipe's ``--model_type`` choices.

``transformers`` is imported inside the builders, so the recipes run without it until
a ``--model_type`` of this module is asked for; then a missing install is a clear
`ImportError` naming the extra to install.
"""

from __future__ import annotations

from typing import Any

__all__ = ["build_bert_classifier", "build_gpt2_lm", "build_t5_seq2seq", "require_transformers"]


def require_transformers(model_type: str) -> Any:
    """Import and return the ``transformers`` module, or fail with the install command.

    Args:
        model_type: The ``--model_type`` value that needs it (named in the error).

    Raises:
        ImportError: If ``transformers`` is not installed.
    """
    try:
        import transformers
    except ImportError as err:
        raise ImportError(
            f"--model_type {model_type} builds a transformers model, but transformers is not installed: "
            'pip install -e ".[transformers]"'
        ) from err
    return transformers


def build_gpt2_lm(
    vocab_size: int,
    block_size: int,
    n_layer: int = 4,
    n_head: int = 4,
    d_model: int = 128,
    dropout: float = 0.0,
) -> Any:
    """A small `GPT2LMHeadModel` (random init, output head tied to the token embedding).

    Args:
        vocab_size: Number of token ids.
        block_size: Longest sequence (``n_positions``).
        n_layer: Transformer blocks.
        n_head: Attention heads; must divide ``d_model``.
        d_model: Width (``n_embd``); the MLP is 4 times wider.
        dropout: Residual, embedding and attention dropout.

    Returns:
        The model; ``model(input_ids=..., labels=...)`` gives the shifted causal LM loss.
    """
    transformers = require_transformers("gpt2")
    if d_model % n_head:
        raise ValueError(f"d_model ({d_model}) must be divisible by n_head ({n_head})")
    config = transformers.GPT2Config(
        vocab_size=vocab_size,
        n_positions=block_size,
        n_embd=d_model,
        n_layer=n_layer,
        n_head=n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=0,
        eos_token_id=0,
        use_cache=False,
    )
    return transformers.GPT2LMHeadModel(config)


def build_bert_classifier(
    vocab_size: int,
    num_labels: int,
    max_length: int = 128,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 2,
    dropout: float = 0.1,
    pad_token_id: int = 0,
) -> Any:
    """A small `BertForSequenceClassification` (random init) over a recipe's vocabulary.

    Args:
        vocab_size: Number of token ids.
        num_labels: Number of classes.
        max_length: Longest sequence (``max_position_embeddings``).
        hidden_size: Width; must be divisible by ``num_heads``. The MLP is 4 times wider.
        num_layers: Encoder layers.
        num_heads: Attention heads.
        dropout: Hidden and attention dropout.
        pad_token_id: Id of the padding token.

    Returns:
        The model; ``model(input_ids=..., attention_mask=..., labels=...)`` gives the
        cross-entropy of the first token's pooled state.
    """
    transformers = require_transformers("bert")
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size ({hidden_size}) must be divisible by num_heads ({num_heads})")
    config = transformers.BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=4 * hidden_size,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
        max_position_embeddings=max_length,
        type_vocab_size=1,
        num_labels=num_labels,
        pad_token_id=pad_token_id,
    )
    return transformers.BertForSequenceClassification(config)


def build_t5_seq2seq(
    vocab_size: int,
    d_model: int = 64,
    d_ff: int = 256,
    num_layers: int = 2,
    num_heads: int = 4,
    dropout: float = 0.0,
    pad_token_id: int = 0,
    eos_token_id: int = 1,
    decoder_start_token_id: int = 0,
) -> Any:
    """A small `T5ForConditionalGeneration` (random init) over a recipe's vocabulary.

    Args:
        vocab_size: Number of token ids (source and target share them).
        d_model: Width; must be divisible by ``num_heads`` (``d_kv = d_model // num_heads``).
        d_ff: Hidden width of the feed-forward layers.
        num_layers: Encoder layers, and again decoder layers.
        num_heads: Attention heads.
        dropout: Dropout probability.
        pad_token_id: Id of the padding token.
        eos_token_id: Id that ends a sequence.
        decoder_start_token_id: First decoder input (T5 uses the pad id by default).

    Returns:
        The model; ``model(input_ids=..., attention_mask=..., labels=...)`` gives the
        teacher-forced cross-entropy, and ``model.generate`` writes outputs that start with
        ``decoder_start_token_id``.
    """
    transformers = require_transformers("t5")
    if d_model % num_heads:
        raise ValueError(f"d_model ({d_model}) must be divisible by num_heads ({num_heads})")
    config = transformers.T5Config(
        vocab_size=vocab_size,
        d_model=d_model,
        d_kv=d_model // num_heads,
        d_ff=d_ff,
        num_layers=num_layers,
        num_decoder_layers=num_layers,
        num_heads=num_heads,
        dropout_rate=dropout,
        pad_token_id=pad_token_id,
        eos_token_id=eos_token_id,
        decoder_start_token_id=decoder_start_token_id,
    )
    return transformers.T5ForConditionalGeneration(config)
