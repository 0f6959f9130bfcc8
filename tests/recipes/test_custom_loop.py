"""Tests of the hand-written loop recipe (recipes/custom_loop.py): a short run, resume
after an interruption (bit for bit), parity with the Trainer recipe, options, DDP."""

from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "recipes" / "custom_loop.py"
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from recipes import custom_loop as cl  # noqa: E402
from recipes import language_modeling as lm  # noqa: E402
from recipes.models import DecoderConfig, DecoderLM  # noqa: E402
from toolkit.checkpoint import load_tensors  # noqa: E402
from toolkit.loggers import JSONLinesLogger  # noqa: E402

TINY = "--data_bytes 120000 --block_size 64 --n_layer 1 --n_head 2 --d_model 32 --learning_rate 1e-2".split()


def run(out: Path, *extra: str) -> dict[str, float]:
    return cl.main(["--output_dir", str(out), *TINY, "--batch_size", "8", *extra])


def weights(folder: Path) -> dict[str, torch.Tensor]:
    return load_tensors(str(folder / "model.safetensors"))


@pytest.fixture(autouse=True)
def one_thread(request):
    """Tiny models run fastest on one thread; the slow default run keeps PyTorch's default."""
    threads = torch.get_num_threads()
    if request.node.get_closest_marker("slow") is None:
        torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_short_run_writes_metrics_checkpoints_and_model(tmp_path, capsys):
    out = tmp_path / "loop"
    result = run(
        out,
        "--max_steps",
        "12",
        "--logging_steps",
        "4",
        "--eval_steps",
        "6",
        "--save_steps",
        "5",
        "--save_total_limit",
        "1",
        "--generate",
        "--generate_tokens",
        "8",
    )
    assert math.isfinite(result["eval_loss"]) and result["eval_loss"] < math.log(256)
    assert result["perplexity"] == pytest.approx(math.exp(result["eval_loss"]))
    assert result["train_mem_cpu_alloc_delta"] == int(result["train_mem_cpu_alloc_delta"])
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [4, 8, 12]
    assert [r["step"] for r in records if "eval_loss" in r] == [6, 12, 12]  # periodic, then the final result
    assert records[-1]["eval_loss"] == pytest.approx(result["eval_loss"])
    losses = [r["loss"] for r in records if "loss" in r]
    assert losses[-1] < losses[0]
    # save every 5 steps, keep 1: only checkpoint-10 remains, with everything a resume needs
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-10"]
    files = {p.name for p in (out / "checkpoint-10").iterdir()}
    assert {"model.safetensors", "optimizer.pt", "scheduler.pt", "loop.json", "rng_state.pth"} <= files
    loop_state = json.loads((out / "checkpoint-10" / "loop.json").read_text())
    assert loop_state["step"] == 10 and loop_state["consumed"] == 80
    assert loop_state["sampler"] == [{"epoch": 0, "seed": 42, "position": 80}]
    config = DecoderConfig(**json.loads((out / "model_config.json").read_text()))
    DecoderLM(config).load_state_dict(weights(out))  # strict: the tied head is restored
    printed = capsys.readouterr().out
    assert "----- sample -----\ndef " in printed and f"Model saved to {out}" in printed


class CrashingLogger(JSONLinesLogger):
    """Raises at step 7, as if the process were killed there (after checkpoint-4)."""

    def log_metrics(self, metrics, step):
        super().log_metrics(metrics, step)
        if step == 7:
            raise KeyboardInterrupt("simulated interruption at step 7")


def test_interrupted_and_resumed_run_ends_with_the_same_weights(tmp_path, monkeypatch, capsys):
    # three epochs of a small corpus so that the resumed run crosses epoch boundaries too
    args = [
        "--data_bytes",
        "12000",
        "--max_steps",
        "40",
        "--logging_steps",
        "1",
        "--eval_steps",
        "10",
        "--save_steps",
        "4",
    ]
    full = run(tmp_path / "full", *args)

    monkeypatch.setitem(cl.LOGGERS, "jsonl", CrashingLogger)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "resumed", *args)
    assert sorted(p.name for p in (tmp_path / "resumed").glob("checkpoint-*")) == ["checkpoint-4"]
    assert not (tmp_path / "resumed" / "model.safetensors").exists()
    monkeypatch.undo()

    with pytest.raises(ValueError, match="--resume"):  # never silently restarts over a checkpoint
        run(tmp_path / "resumed", *args)
    resumed = run(tmp_path / "resumed", *args, "--resume")
    assert f"Resumed from {tmp_path / 'resumed' / 'checkpoint-4'} at step 4" in capsys.readouterr().out

    a, b = weights(tmp_path / "full"), weights(tmp_path / "resumed")
    assert sorted(a) == sorted(b)
    for name in a:
        assert torch.equal(a[name], b[name]), name
    assert resumed["eval_loss"] == full["eval_loss"]
    epochs = [
        json.loads(line)["epoch"]
        for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()
        if "loss" in line and "eval" not in line
    ]
    assert epochs[-1] > 2  # the run did cross epochs


def test_same_training_as_the_trainer_recipe(tmp_path):
    """The loop and `language_modeling.py` (the Trainer) give identical weights."""
    steps = ["--max_steps", "10", "--logging_steps", "5", "--eval_steps", "10"]
    trainer = lm.main(
        [
            "--output_dir",
            str(tmp_path / "trainer"),
            *TINY,
            *steps,
            "--per_device_train_batch_size",
            "8",
            "--disable_tqdm",
            "true",
        ]
    )
    loop = run(tmp_path / "loop", *steps, "--save_steps", "0")
    a, b = weights(tmp_path / "trainer"), weights(tmp_path / "loop")
    assert sorted(a) == sorted(b)
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=1e-6, atol=1e-7)
    assert loop["eval_loss"] == pytest.approx(trainer["eval_loss"], rel=1e-6)


def test_options_defaults_csv_logger_and_errors(tmp_path):
    data, opts = cl.parse_args(["--output_dir", str(tmp_path)])
    assert opts.learning_rate == lm.TRAINING_DEFAULTS["learning_rate"]
    assert opts.max_steps == lm.TRAINING_DEFAULTS["max_steps"] and data.block_size == 128
    config = tmp_path / "loop.json"
    config.write_text(json.dumps({"output_dir": str(tmp_path / "csv"), "logger": "csv", "max_steps": 3}))
    data, opts = cl.parse_args([str(config)])
    assert (opts.logger, opts.max_steps) == ("csv", 3)
    cl.main(
        [
            "--output_dir",
            str(tmp_path / "csv"),
            *TINY,
            "--max_steps",
            "2",
            "--logging_steps",
            "1",
            "--eval_steps",
            "2",
            "--logger",
            "csv",
            "--save_steps",
            "0",
            "--track_memory",
            "false",
        ]
    )
    header = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()[0]
    assert "loss" in header and "eval_loss" in header and "train_mem_cpu_alloc_delta" not in header
    with pytest.raises(ValueError, match="max_steps"):
        cl.parse_args(["--output_dir", str(tmp_path), "--max_steps", "0"])
    with pytest.raises(SystemExit):  # argparse rejects an unknown precision name
        cl.parse_args(["--output_dir", str(tmp_path), "--precision", "fp8"])


def test_help_lists_loop_and_model_options(recipe_help):
    stdout = recipe_help(SCRIPT)
    for option in ("--resume", "--save_steps", "--precision", "--logger", "--block_size", "--learning_rate"):
        assert option in stdout


@pytest.mark.distributed
def test_torchrun_two_processes(tmp_path, torchrun_recipe):
    out = tmp_path / "ddp"
    args = ["--output_dir", str(out), *TINY, "--batch_size", "4", "--max_steps", "6", "--logging_steps", "3"]
    stdout = torchrun_recipe(SCRIPT, [*args, "--eval_steps", "6", "--save_steps", "3", "--num_threads", "1"])
    loop_state = json.loads((out / "checkpoint-6" / "loop.json").read_text())
    assert [s["position"] for s in loop_state["sampler"]] == [24, 24]  # each rank's own position
    assert re.search(r"eval_loss = \d", stdout)


@pytest.mark.slow
def test_default_run_reaches_documented_result(tmp_path):
    match = re.search(r"eval loss <= ([\d.]+) nats/byte", cl.__doc__)
    assert match, "the recipe docstring must state the default run's result"
    metrics = cl.main(["--output_dir", str(tmp_path / "loop")])
    assert metrics["eval_loss"] <= float(match.group(1))
