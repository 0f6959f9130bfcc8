"""`Seq2SeqTrainer` behaviour with small recording models: what reaches ``generate``,
padding within and across batches, the loss, the generation settings and their
defaults, ``generation_config`` forms, the pad id, and ``sortish_sampler``."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import nn

from toolkit import Seq2SeqTrainer, Seq2SeqTrainingArguments, Trainer, TrainingArguments
from toolkit.data import DataCollatorWithPadding, LengthGroupedSampler
from toolkit.generation import GenerationConfig, Seq2SeqGenerationMixin

START, EOS = 1, 2
PAD = 7  # the model's pad id, distinct from the collator's 0 and from -100


class EchoModel(nn.Module):
    """``generate`` returns the start token then the input (as a decoder-only model returns
    its prompt), ignoring every limit, and records what it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.config = types.SimpleNamespace(pad_token_id=PAD)
        self.calls: list[dict] = []

    def forward(self, input_ids, attention_mask=None, labels=None, decoder_input_ids=None, decoder_attention_mask=None):
        logits = input_ids.float()[..., None] * self.scale
        if labels is None:
            return {"logits": logits}
        loss = (self.scale * input_ids.float().mean(1) - labels.clamp(min=0).float().mean(1)).pow(2).mean()
        return {"loss": loss, "logits": logits}

    def generate(self, input_ids, attention_mask=None, **kwargs):
        self.calls.append(kwargs)
        start = torch.full((input_ids.shape[0], 1), START, dtype=torch.long)
        return torch.cat([start, input_ids], dim=1)


class StopAtOnce(Seq2SeqGenerationMixin, nn.Module):
    """A mixin model that always says EOS: outputs are [START, EOS]."""

    pad_token_id, decoder_start_token_id, eos_token_id = PAD, START, EOS

    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(1, 1)

    def encode(self, input_ids, attention_mask):
        return input_ids

    def decode(self, decoder_input_ids, memory, memory_mask):
        return nn.functional.one_hot(torch.full_like(decoder_input_ids, EOS), 10).float()

    def forward(self, input_ids, attention_mask=None, labels=None):
        return {"loss": self.lin.weight.sum() * 0 + 1.0}


def _args(tmp_path, **kw) -> Seq2SeqTrainingArguments:
    base = dict(
        per_device_eval_batch_size=2, report_to="none", disable_tqdm=True, save_strategy="no",
        predict_with_generate=True, log_level="warning",
    )
    return Seq2SeqTrainingArguments(str(tmp_path), **{**base, **kw})


def _data(widths=(2, 2, 6, 6)) -> list[dict]:
    return [{"input_ids": list(range(3, 3 + w)), "labels": list(range(3, 3 + w))[::-1] + [EOS]} for w in widths]


def _trainer(tmp_path, model=None, **kw) -> Seq2SeqTrainer:
    compute_metrics = kw.pop("compute_metrics", lambda p: {"n": float(len(p.predictions))})
    tokenizer = kw.pop("tokenizer", None)
    return Seq2SeqTrainer(
        model if model is not None else EchoModel(), _args(tmp_path, **kw),
        data_collator=DataCollatorWithPadding(pad_token_id=0), compute_metrics=compute_metrics, tokenizer=tokenizer,
    )


def test_exported_from_the_package():
    import toolkit

    assert toolkit.Seq2SeqTrainer is Seq2SeqTrainer and issubclass(Seq2SeqTrainer, Trainer)
    assert issubclass(toolkit.Seq2SeqTrainingArguments, TrainingArguments)


def test_tokens_padded_with_pad_id_in_a_batch_and_minus_100_across_batches(tmp_path):
    out = _trainer(tmp_path).predict(_data(), max_length=5)
    # batch 1 generated 3 tokens: padded to max_length=5 with the pad id, then to the
    # 7 tokens of batch 2 (longer than max_length, so left as is) with -100
    assert out.predictions.shape == (4, 7)
    assert out.predictions[0].tolist() == [START, 3, 4, PAD, PAD, -100, -100]
    assert out.predictions[2].tolist() == [START, 3, 4, 5, 6, 7, 8]
    # labels: batch 1 [4, 3, EOS] padded likewise, batch 2 (7 tokens) left as is
    assert out.label_ids[0].tolist() == [4, 3, EOS, PAD, PAD, -100, -100]
    assert out.label_ids[2].tolist() == [8, 7, 6, 5, 4, 3, EOS]


def test_generate_gets_the_batch_without_labels_and_decoder_inputs_built_from_them(tmp_path):
    trainer = _trainer(tmp_path)
    seen = []
    trainer.model.generate = lambda **kw: seen.append(sorted(kw)) or kw["input_ids"]
    labels = torch.tensor([[4, 3, EOS]])
    batch = {"input_ids": torch.tensor([[3, 4]]), "attention_mask": torch.ones(1, 2, dtype=torch.long),
             "labels": labels, "decoder_input_ids": labels.clone(), "decoder_attention_mask": torch.ones(1, 3)}
    trainer.prediction_step(trainer.model, batch, prediction_loss_only=False)
    assert seen[-1] == ["attention_mask", "input_ids"]
    batch["decoder_input_ids"] = torch.tensor([[START]])  # not derived from the labels: kept
    trainer.prediction_step(trainer.model, batch, prediction_loss_only=False)
    assert "decoder_input_ids" in seen[-1] and "decoder_attention_mask" not in seen[-1]


def test_loss_equals_the_plain_trainer_loss_and_needs_labels(tmp_path):
    data = _data()
    model = EchoModel()
    metrics = _trainer(tmp_path, model).evaluate(data, max_length=4)
    plain = Trainer(model, TrainingArguments(str(tmp_path), per_device_eval_batch_size=2, report_to="none"),
                    data_collator=DataCollatorWithPadding(pad_token_id=0)).evaluate(data)
    assert metrics["eval_loss"] == pytest.approx(plain["eval_loss"])
    out = _trainer(tmp_path).predict([{"input_ids": d["input_ids"]} for d in data])
    assert out.label_ids is None and "test_loss" not in out.metrics and out.predictions.shape[0] == 4


def test_generation_settings_default_to_the_arguments_and_calls_override_them(tmp_path):
    trainer = _trainer(tmp_path, generation_max_length=5, generation_num_beams=3)
    calls = trainer.model.calls
    trainer.evaluate(_data())
    assert calls[-1] == {"max_length": 5, "num_beams": 3}
    trainer.evaluate(_data(), max_length=9, num_beams=1)
    assert calls[-1] == {"max_length": 9, "num_beams": 1}
    trainer.predict(_data(), max_new_tokens=4)  # max_new_tokens replaces the default max_length
    assert calls[-1] == {"max_new_tokens": 4, "num_beams": 3}
    trainer.predict(_data())  # settings of one call do not leak into the next
    assert calls[-1] == {"max_length": 5, "num_beams": 3}
    _trainer(tmp_path / "b").evaluate(_data())
    assert _trainer(tmp_path / "c").model.calls == []  # nothing set, nothing passed


def test_each_of_several_eval_datasets_gets_the_call_settings(tmp_path):
    trainer = _trainer(tmp_path, generation_max_length=5)
    metrics = trainer.evaluate({"a": _data(), "b": _data((3, 3))}, num_beams=2)
    assert trainer.model.calls[-2:] == [{"max_length": 5, "num_beams": 2}] * 2
    assert {"eval_a_n", "eval_b_n", "eval_a_loss", "eval_b_loss"} <= set(metrics)


def test_evaluation_during_training_generates(tmp_path):
    trainer = _trainer(tmp_path, generation_max_length=6, max_steps=2, eval_steps=2,
                       evaluation_strategy="steps", per_device_train_batch_size=2)
    trainer.train_dataset = trainer.eval_dataset = _data()
    trainer.train()
    assert trainer.model.calls and trainer.model.calls[-1] == {"max_length": 6}
    assert any("eval_n" in e for e in trainer.state.log_history)


def test_no_generation_without_predict_with_generate_or_for_the_loss_only(tmp_path):
    trainer = _trainer(tmp_path, predict_with_generate=False)
    out = trainer.predict(_data())
    assert trainer.model.calls == [] and out.predictions.ndim == 3  # the model's logits
    trainer = _trainer(tmp_path, prediction_loss_only=True)
    metrics = trainer.evaluate(_data())
    assert trainer.model.calls == [] and "eval_loss" in metrics
    trainer = _trainer(tmp_path, compute_metrics=None)
    assert "eval_loss" in trainer.evaluate(_data()) and trainer.model.calls == []


def test_pad_id_from_tokenizer_then_its_eos_then_the_model(tmp_path):
    data = _data((2, 2))
    tok = types.SimpleNamespace(pad_token_id=9, eos_token_id=EOS)
    assert _trainer(tmp_path, tokenizer=tok).predict(data, max_length=4).predictions[0, -1] == 9
    tok = types.SimpleNamespace(pad_token_id=None, eos_token_id=EOS)
    assert _trainer(tmp_path, tokenizer=tok).predict(data, max_length=4).predictions[0, -1] == EOS
    model = EchoModel()
    model.config = types.SimpleNamespace()
    with pytest.raises(ValueError, match="pad_token_id"):
        _trainer(tmp_path, model).predict(data, max_length=4)


def test_mixin_model_outputs_are_padded_to_its_config_length(tmp_path):
    data = _data((2, 3))
    out = _trainer(tmp_path, StopAtOnce()).predict(data)
    assert out.predictions.shape == (2, 20)  # the default max_length of GenerationConfig
    assert out.predictions[0, :3].tolist() == [START, EOS, PAD]
    out = _trainer(tmp_path, StopAtOnce(), generation_config={"max_length": 6}).predict(data)
    assert out.predictions.shape == (2, 6)
    out = _trainer(tmp_path, StopAtOnce(), generation_config={"max_new_tokens": 2}).predict(data, num_beams=2)
    assert out.predictions.shape == (2, 3)


@pytest.mark.parametrize("form", ["dict", "object", "file", "folder"])
def test_generation_config_argument_forms(tmp_path, form):
    config = GenerationConfig(max_length=6, num_beams=2, eos_token_id=EOS)
    if form == "dict":
        arg = config.to_dict()
    elif form == "object":
        arg = config
    elif form == "file":
        arg = config.save_pretrained(tmp_path / "cfg", "gen.json")
    else:
        config.save_pretrained(tmp_path / "cfg")
        arg = str(tmp_path / "cfg")
    trainer = _trainer(tmp_path, StopAtOnce(), generation_config=arg)
    assert trainer.model.generation_config == config
    assert trainer.model.generation_config is not config  # a copy
    assert trainer.args.to_dict()["generation_config"] is not None


def test_bad_generation_config_and_models_without_generate(tmp_path):
    with pytest.raises(ValueError, match="neither a file nor a folder"):
        _trainer(tmp_path, StopAtOnce(), generation_config=str(tmp_path / "missing"))
    with pytest.raises(TypeError, match="Seq2SeqGenerationMixin"):  # before any training
        _trainer(tmp_path, nn.Linear(2, 2))
    trainer = _trainer(tmp_path, nn.Linear(2, 2), predict_with_generate=False)
    trainer.args.predict_with_generate = True
    with pytest.raises(TypeError, match="Seq2SeqGenerationMixin"):
        trainer.evaluate([{"input": torch.ones(2)}])


def test_sortish_sampler_groups_training_batches_by_length(tmp_path):
    data = _data((1, 5, 2, 6, 3, 7, 4, 8))
    trainer = _trainer(tmp_path, sortish_sampler=True, per_device_train_batch_size=2)
    trainer.train_dataset = data
    loader = trainer.get_train_dataloader()
    assert isinstance(loader.sampler, LengthGroupedSampler)
    order = list(loader.sampler)
    assert sorted(order) == list(range(8)) and loader.sampler.batch_size == 2
    assert 8 in [len(data[i]["input_ids"]) for i in order[:2]]  # the longest batch goes first
    plain = _trainer(tmp_path, per_device_train_batch_size=2)
    plain.train_dataset = data
    assert not isinstance(plain.get_train_dataloader().sampler, LengthGroupedSampler)


def test_plain_training_arguments_work_like_the_trainer(tmp_path):
    args = TrainingArguments(str(tmp_path), per_device_eval_batch_size=2, report_to="none")
    trainer = Seq2SeqTrainer(EchoModel(), args, data_collator=DataCollatorWithPadding(pad_token_id=0))
    out = trainer.predict(_data())
    assert trainer.model.calls == [] and np.isfinite(out.metrics["test_loss"])
