"""With `transformers` installed, a `transformers` model's own ``generate`` is used and
``generation_config`` becomes a `transformers.GenerationConfig`. Skipped without it."""

from __future__ import annotations

import pytest
import torch

from toolkit import Seq2SeqTrainer, Seq2SeqTrainingArguments
from toolkit.data import DataCollatorWithPadding

transformers = pytest.importorskip("transformers")

PAD, START, EOS = 0, 1, 2


def _tiny_bart():
    config = transformers.BartConfig(
        vocab_size=12, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, max_position_embeddings=32,
        pad_token_id=PAD, bos_token_id=START, eos_token_id=EOS, decoder_start_token_id=START,
        forced_bos_token_id=None, forced_eos_token_id=None,
    )
    torch.manual_seed(0)
    return transformers.BartForConditionalGeneration(config).eval()


def test_transformers_model_generates_with_its_own_generate(tmp_path):
    data = [{"input_ids": [3 + i % 5, 4, 5][: 2 + i % 2], "labels": [5, 4, EOS]} for i in range(6)]
    model = _tiny_bart()
    args = Seq2SeqTrainingArguments(
        str(tmp_path), per_device_eval_batch_size=4, per_device_train_batch_size=2, max_steps=2,
        predict_with_generate=True, generation_config={"max_length": 7, "num_beams": 2, "pad_token_id": PAD,
                                                       "eos_token_id": EOS, "decoder_start_token_id": START},
        report_to="none", disable_tqdm=True, save_strategy="no", log_level="warning",
    )
    trainer = Seq2SeqTrainer(model, args, train_dataset=data, data_collator=DataCollatorWithPadding(pad_token_id=PAD))
    assert isinstance(model.generation_config, transformers.GenerationConfig)
    assert model.generation_config.max_length == 7 and model.generation_config.num_beams == 2

    out = trainer.predict(data)
    assert out.predictions.shape == (6, 7) and (out.predictions[:, 0] == START).all()
    assert "test_loss" in out.metrics
    batch = DataCollatorWithPadding(pad_token_id=PAD)(data[:4])
    with torch.no_grad():
        direct = model.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    assert out.predictions[:4, : direct.shape[1]].tolist() == direct.tolist()

    metrics = trainer.evaluate(data, max_new_tokens=3)
    assert "eval_loss" in metrics
    assert trainer.predict(data, max_new_tokens=3).predictions.shape == (6, 4)
    trainer.train()
