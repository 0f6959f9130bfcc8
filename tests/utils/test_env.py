"""Launcher environment helpers."""

import socket

import pytest


def _one_process_group():
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)


class _Holder:
    """Holds the group inside a reference cycle, as a trainer holds its DDP wrapper."""

    def __init__(self, group) -> None:
        self.group = group
        self.me = self


@pytest.mark.parametrize("reachable", [False, True])
def test_the_exit_hook_frees_unreachable_holders_first_and_waits_only_for_held_groups(monkeypatch, reachable):
    import time
    import weakref

    import torch.distributed as dist

    from toolkit.utils import env as env_module

    slept = []
    monkeypatch.setattr(time, "sleep", slept.append)
    _one_process_group()
    try:
        holder = _Holder(dist.group.WORLD)
        group = weakref.ref(dist.group.WORLD)
        if not reachable:
            del holder  # only the cycle keeps it now: the hook must collect it
        env_module._shut_down_default_group(grace=0.25)
        assert not dist.is_initialized()
        if reachable:
            assert group() is not None and slept == [0.25]  # its threads get a moment
        else:
            assert group() is None and slept == []  # freed (threads joined): no wait
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def test_the_process_group_is_destroyed_at_exit_once_registered(monkeypatch):
    import atexit

    import torch.distributed as dist

    from toolkit.utils import env as env_module

    hooks = []
    monkeypatch.setattr(atexit, "register", hooks.append)
    monkeypatch.setattr(env_module, "_exit_hook_registered", False)
    _one_process_group()
    try:
        env_module.destroy_process_group_at_exit()
        env_module.destroy_process_group_at_exit()
        assert len(hooks) == 1  # registered once
        hooks[0]()  # what the interpreter runs at exit
        assert not dist.is_initialized()
        hooks[0]()  # already destroyed: nothing to do
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
