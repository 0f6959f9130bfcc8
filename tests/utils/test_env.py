"""Launcher environment helpers."""



def test_the_process_group_is_destroyed_at_exit_once_registered(monkeypatch):
    import atexit
    import socket

    import torch.distributed as dist

    from toolkit.utils import env as env_module

    hooks = []
    monkeypatch.setattr(atexit, "register", hooks.append)
    monkeypatch.setattr(env_module, "_exit_hook_registered", False)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1)
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
