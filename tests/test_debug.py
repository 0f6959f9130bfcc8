"""Tests of DebugUnderflowOverflow and detect_overflow."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from toolkit.debug import DebugUnderflowOverflow, UnderflowOverflowError, detect_overflow


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class Net(nn.Module):
    def __init__(self, factor: float = 1.0) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.blowup = Scale(factor)
        self.head = nn.Linear(4, 2)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": self.head(self.blowup(self.encoder(x)))}


def make(factor: float = 1.0) -> Net:
    torch.manual_seed(0)
    net = Net(factor)
    with torch.no_grad():
        net.encoder[0].bias.fill_(1.0)  # relu output > 0, so the scaling really overflows
    return net


def test_reports_the_module_where_inf_appears(capsys):
    net = make(1e39)  # 1e39 does not fit in float32: inf
    debug = DebugUnderflowOverflow(net)
    with pytest.raises(ValueError, match="'blowup'") as info:
        net(torch.ones(3, 4))
    err = info.value
    assert isinstance(err, UnderflowOverflowError)
    assert err.module_name == "blowup" and err.batch_number == 0
    out = capsys.readouterr().out
    assert out.startswith("Detected inf/nan during batch_number=0")
    # the frames leading to it, the culprit last; nothing after it ran
    assert out.index("encoder.0 Linear") < out.index("encoder.1 ReLU") < out.index("blowup Scale")
    assert "head Linear" not in out
    last = out.strip().splitlines()[-1]
    assert last.split()[:2] == ["inf", "inf"] and last.endswith("output inf")
    assert "weight" in out and "bias" in out and "input[0]" in out
    debug.remove()


def test_nan_in_weights_is_detected():
    net = make()
    with torch.no_grad():
        net.head.weight[0, 0] = float("nan")
    with DebugUnderflowOverflow(net), pytest.raises(UnderflowOverflowError) as info:
        net(torch.ones(1, 4))
    assert info.value.module_name == "head" and "weight nan" in info.value.report


def test_healthy_batches_count_and_ring_buffer_is_bounded(capsys):
    net = make()
    with DebugUnderflowOverflow(net, max_frames_to_save=3) as debug:
        for _ in range(4):
            net(torch.ones(2, 4))
        assert debug.batch_number == 4 and not debug.detected_overflow
        assert len(debug.frames) == 3
        assert debug.total_calls == 4 * 6  # 6 modules per forward, the model and Sequential included
    assert capsys.readouterr().out == ""  # silent while healthy


def test_keyword_inputs_and_nested_outputs_are_reported():
    class KwNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(2, 2)

        def forward(self, input_ids, scale=None):
            return (self.lin(input_ids) * scale, [input_ids])

    net = KwNet()
    with DebugUnderflowOverflow(net, max_frames_to_save=5) as debug:
        net(input_ids=torch.ones(1, 2), scale=torch.tensor(2.0))
    text = "\n".join(debug.frames)
    assert "input[input_ids]" in text and "input[scale]" in text
    assert "output[0]" in text and "output[1][0]" in text


def test_trace_batches_are_printed_and_abort_after(capsys):
    net = make()
    debug = DebugUnderflowOverflow(net, trace_batch_nums=[1], abort_after_batch_num=2)
    net(torch.ones(1, 4))
    out = capsys.readouterr().out
    assert "Linear" not in out and "Starting batch number=1" in out  # batch 0 is not traced
    net(torch.ones(1, 4))
    out = capsys.readouterr().out
    assert "blowup Scale" in out and out.rstrip().endswith("output[logits]")
    assert out.index("encoder.0 Linear") < out.index("head Linear") < out.index("<model> Net")
    with pytest.raises(ValueError, match="abort_after_batch_num=2"):
        net(torch.ones(1, 4))
    debug.remove()


def test_remove_takes_every_hook_off():
    net = make(1e39)
    debug = DebugUnderflowOverflow(net)
    assert all(len(m._forward_hooks) == 1 for m in net.modules())
    debug.remove()
    debug.remove()  # idempotent
    assert not debug.attached
    assert all(len(m._forward_hooks) == 0 for m in net.modules())
    out = net(torch.ones(1, 4))["logits"]  # no detector: the inf goes through silently
    assert not torch.isfinite(out).all()
    assert debug.total_calls == 0


def test_bad_arguments():
    with pytest.raises(TypeError, match="nn.Module"):
        DebugUnderflowOverflow(object())
    with pytest.raises(ValueError, match="max_frames_to_save"):
        DebugUnderflowOverflow(nn.Linear(1, 1), max_frames_to_save=0)


def test_detect_overflow(capsys):
    assert detect_overflow(torch.tensor([1.0, float("nan"), float("inf")]), "x") is True
    assert capsys.readouterr().out == "x has nans\nx has infs\n"
    assert detect_overflow(torch.ones(3), "y") is False
