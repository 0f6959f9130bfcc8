"""The DeepSpeed configuration: reading it and resolving HF-style "auto" values (pure, fast,
no deepspeed import needed)."""

from __future__ import annotations

import json

import pytest

from toolkit.strategies.deepspeed import fill_auto_values, find_auto_values, load_deepspeed_config

ARGS = {"micro_batch_size": 4, "gradient_accumulation_steps": 2, "world_size": 2}

FULL_AUTO = {
    "train_batch_size": "auto",
    "train_micro_batch_size_per_gpu": "auto",
    "gradient_accumulation_steps": "auto",
    "gradient_clipping": "auto",
    "optimizer": {"type": "AdamW", "params": {"lr": "auto", "betas": "auto", "eps": "auto", "weight_decay": "auto"}},
    "scheduler": {"type": "WarmupDecayLR", "params": {"warmup_min_lr": "auto", "warmup_max_lr": "auto",
                                                      "warmup_num_steps": "auto", "total_num_steps": "auto"}},
    "fp16": {"enabled": "auto"},
    "bf16": {"enabled": "auto"},
    "zero_optimization": {"stage": 3, "reduce_bucket_size": "auto", "stage3_prefetch_bucket_size": "auto",
                          "stage3_param_persistence_threshold": "auto"},
}


def test_every_auto_value_is_filled_from_the_arguments() -> None:
    cfg = fill_auto_values(
        FULL_AUTO, **ARGS, max_grad_norm=0.5, learning_rate=3e-4, adam_beta1=0.8, adam_beta2=0.95,
        adam_epsilon=1e-6, weight_decay=0.01, warmup_steps=10, total_steps=100, bf16=True, hidden_size=8,
    )
    assert cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_accumulation_steps"] == 2
    assert cfg["train_batch_size"] == 16
    assert cfg["gradient_clipping"] == 0.5
    assert cfg["optimizer"]["params"] == {"lr": 3e-4, "betas": [0.8, 0.95], "eps": 1e-6, "weight_decay": 0.01}
    assert cfg["scheduler"]["params"] == {"warmup_min_lr": 0, "warmup_max_lr": 3e-4, "warmup_num_steps": 10,
                                          "total_num_steps": 100}
    assert cfg["fp16"] == {"enabled": False} and cfg["bf16"] == {"enabled": True}
    assert cfg["zero_optimization"] == {"stage": 3, "reduce_bucket_size": 64, "stage3_prefetch_bucket_size": 57,
                                        "stage3_param_persistence_threshold": 80}
    assert find_auto_values(cfg) == []
    assert FULL_AUTO["train_batch_size"] == "auto"  # the input is not changed


def test_missing_batch_keys_are_added_and_explicit_consistent_values_kept() -> None:
    assert fill_auto_values({}, **ARGS)["train_batch_size"] == 16
    cfg = fill_auto_values({"train_batch_size": 16, "gradient_clipping": "auto"}, **ARGS)
    assert cfg["train_batch_size"] == 16 and cfg["train_micro_batch_size_per_gpu"] == 4
    assert cfg["gradient_clipping"] == 0.0  # no max_grad_norm: no clipping


def test_bucket_sizes_without_hidden_size_fall_back_to_deepspeed_defaults() -> None:
    cfg = fill_auto_values({"zero_optimization": {"stage": 2, "reduce_bucket_size": "auto"}}, **ARGS)
    assert cfg["zero_optimization"] == {"stage": 2}


@pytest.mark.parametrize(("config", "key"), [
    ({"train_batch_size": 10}, "train_batch_size"),
    ({"train_micro_batch_size_per_gpu": 8}, "train_micro_batch_size_per_gpu"),
    ({"gradient_accumulation_steps": 4}, "gradient_accumulation_steps"),
])
def test_inconsistent_batch_sizes_name_the_key(config: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        fill_auto_values(config, **ARGS)


def test_unresolvable_auto_names_the_key() -> None:
    config = {"scheduler": {"type": "WarmupLR", "params": {"total_num_steps": "auto"}}}
    with pytest.raises(ValueError, match=r"scheduler\.params\.total_num_steps"):
        fill_auto_values(config, **ARGS)
    with pytest.raises(ValueError, match=r"activation_checkpointing\.foo"):
        fill_auto_values({"activation_checkpointing": {"foo": "auto"}}, **ARGS)


def test_precision_conflicts_are_reported() -> None:
    with pytest.raises(ValueError, match="fp16.enabled and bf16.enabled"):
        fill_auto_values({"fp16": {"enabled": True}, "bf16": {"enabled": True}}, **ARGS)
    with pytest.raises(ValueError, match="fp16.enabled"):
        fill_auto_values({"fp16": {"enabled": True}}, **ARGS, bf16=True)


def test_config_from_a_path_a_dict_and_bad_inputs(tmp_path) -> None:
    path = tmp_path / "ds.json"
    path.write_text(json.dumps({"zero_optimization": {"stage": 2}}))
    assert load_deepspeed_config(str(path)) == {"zero_optimization": {"stage": 2}}
    source = {"a": {"b": 1}}
    copy = load_deepspeed_config(source)
    copy["a"]["b"] = 2
    assert source["a"]["b"] == 1
    with pytest.raises(ValueError, match="deepspeed=.*no such file"):
        load_deepspeed_config(str(tmp_path / "missing.json"))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="deepspeed=.*not valid JSON"):
        load_deepspeed_config(str(tmp_path / "bad.json"))
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ValueError, match="JSON object"):
        load_deepspeed_config(str(tmp_path / "list.json"))
    with pytest.raises(ValueError, match="path to a JSON file or a dict"):
        load_deepspeed_config(3)


def test_the_loop_leaves_clipping_and_the_scheduler_to_a_strategy_that_handles_them() -> None:
    """DeepSpeed's engine clips and steps the scheduler in `engine.step`: the loop must not
    do either a second time (checked with a stand-in strategy, no deepspeed needed)."""
    import torch
    from torch import nn

    from toolkit.loops import TrainLoop
    from toolkit.strategies.base import SingleDeviceStrategy

    class EngineLike(SingleDeviceStrategy):
        handles_clipping = True
        handles_scheduler = True
        clipped = 0

        def clip_grad_norm(self, model, optimizer, max_norm):
            EngineLike.clipped += 1
            return torch.tensor(0.0)

    class Reg(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 1)

        def forward(self, x, labels):
            return {"loss": nn.functional.mse_loss(self.lin(x).squeeze(-1), labels)}

    torch.manual_seed(0)
    model = Reg()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: 1.0 / (1 + s))
    data = [{"x": torch.randn(4, 2), "labels": torch.randn(4)} for _ in range(4)]
    loop = TrainLoop(model, optimizer, data, lr_scheduler=scheduler, strategy=EngineLike("cpu"), max_steps=2,
                     gradient_accumulation_steps=2, max_grad_norm=1e-6)
    loop.run()
    assert loop.state.global_step == 2
    assert EngineLike.clipped == 0
    assert scheduler.last_epoch == 0  # left to the strategy's optimizer_step
