"""Crash-and-resume soak driver, run in a subprocess by ``test_soak.py``.

Importing torch costs seconds, so one supervisor process imports it once and then
forks each *life* of the training run as a child process. The first life of a run gets
SIGTERM (it must save and exit 143), the second SIGINT (it must stop and exit 130); the
next ones are killed with ``SIGKILL`` (nothing in the child can react: no handler, no
``finally``). Each signal comes at a seeded random moment: either a random delay after
the life started, or while the child is inside its k-th checkpoint file write. A hook in the child reports every file
write over a pipe (``W`` before, ``D`` after) and stalls briefly inside it, so the
supervisor knows whether a kill landed mid-write. Each new life resumes with
``resume_from_checkpoint=True``. After the last kill a life runs to the end and saves
its final weights and state; an uninterrupted reference run is trained the same way.

Usage:
    python soak_driver.py soak OUT --modes sync,async --kills 20 --seed 0 --steps 300
        prints ``@@RESULT@@ <json>`` with the kill figures of each mode.
    torchrun --nproc_per_node 2 soak_driver.py ddp-crash OUT
        trains on 2 processes; rank 1 SIGKILLs itself at step ``DDP_KILL_STEP``.
    torchrun --nproc_per_node 2 soak_driver.py ddp-resume OUT
        resumes ``OUT/run`` to the end and trains the reference ``OUT/ref``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import select
import signal
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "trainer"))  # the shared tiny models of the Trainer tests

import conftest as h  # noqa: E402

import toolkit.checkpoint.io as io_mod  # noqa: E402
from toolkit import Trainer  # noqa: E402
from toolkit.callbacks import TrainerCallback  # noqa: E402
from toolkit.checkpoint import get_last_checkpoint  # noqa: E402

SAVE_STEPS = 3
STALL_S = 0.01  # time a child spends inside each checkpoint file write (the window for mid-write kills)
DDP_STEPS = 12
DDP_KILL_STEP = 7


def make_trainer(out: str, steps: int, save_async: bool, **overrides: Any) -> Trainer:
    """The soak run: a dropout regressor (training draws random numbers), a checkpoint
    every ``SAVE_STEPS`` steps, the loss logged every step, the last 3 checkpoints kept."""
    values: dict[str, Any] = dict(
        max_steps=steps,
        per_device_train_batch_size=2,
        save_strategy="steps",
        save_steps=SAVE_STEPS,
        logging_steps=1,
        learning_rate=0.02,
        save_total_limit=3,
        save_async=save_async,
        seed=3,
    )
    values.update(overrides)
    return Trainer(
        h.seeded(h.DropoutRegressor, seed=0), h.make_args(out, **values), train_dataset=h.regression_data(30)
    )


def finish(trainer: Trainer) -> None:
    """After training: the final weights and state, for the comparison with the reference."""
    trainer.save_model()
    trainer.save_state()


# ----------------------------------------------------------------------------- one life
def install_write_hook(fd: int) -> None:
    """Report each checkpoint file write to the supervisor and stall inside it.

    Wraps the IO's per-file writers (``_write_file`` for bytes and markers, and
    ``_write_entry`` where entries are streamed straight into their files)."""

    def wrap(original: Any) -> Any:
        def write(self: Any, *args: Any, **kwargs: Any) -> Any:
            os.write(fd, b"W")
            time.sleep(STALL_S)
            result = original(self, *args, **kwargs)
            os.write(fd, b"D")
            return result

        return write

    for name in ("_write_file", "_write_entry"):
        if hasattr(io_mod.FsspecCheckpointIO, name):
            setattr(io_mod.FsspecCheckpointIO, name, wrap(getattr(io_mod.FsspecCheckpointIO, name)))


def life(out: str, steps: int, save_async: bool, fd: int | None) -> None:
    """One life of the run: resume from the newest committed checkpoint if any, train."""
    import torch

    torch.set_num_threads(1)
    if fd is not None:
        install_write_hook(fd)
    trainer = make_trainer(out, steps, save_async)
    resume = True if get_last_checkpoint(out) is not None else None
    trainer.train(resume_from_checkpoint=resume)
    finish(trainer)


def fork_life(out: str, steps: int, save_async: bool, log_path: str, report: bool) -> tuple[int, int | None]:
    """Start a life in a child process; returns its pid and the read end of its pipe."""
    r, w = os.pipe() if report else (None, None)
    pid = os.fork()
    if pid == 0:  # child
        try:
            if r is not None:
                os.close(r)
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, 1)
            err = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND)
            os.dup2(err, 2)
            life(out, steps, save_async, w)
            code = 0
        except SystemExit as exc:  # e.g. 143 after a SIGTERM save
            code = exc.code if isinstance(exc.code, int) else 1
        except KeyboardInterrupt:  # SIGINT: the exit status a shell reports for it
            code = 130
        except BaseException:  # noqa: BLE001 - reported on stderr, exit code says it failed
            import traceback

            traceback.print_exc()
            code = 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    if w is not None:
        os.close(w)
    return pid, r


def kill_life(pid: int, r: int, rng: random.Random, signum: int = signal.SIGKILL) -> dict[str, Any]:
    """Send ``signum`` to a life at a seeded random moment; returns what happened."""
    by_write = rng.random() < 0.5
    target_writes = rng.randint(1, 3 * 10) if by_write else None  # ~10 files per checkpoint
    deadline = time.monotonic() + (rng.uniform(0.05, 0.8) if not by_write else 60.0)
    writes, in_write = 0, False
    while True:
        timeout = max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([r], [], [], timeout)
        if ready:
            data = os.read(r, 4096)
            if not data:  # the child closed the pipe: it finished (or failed) on its own
                _, status = os.waitpid(pid, 0)
                os.close(r)
                return {"killed": False, "exit": os.waitstatus_to_exitcode(status)}
            for token in data.decode():
                if token == "W":
                    writes += 1
                    in_write = True
                    if by_write and writes >= target_writes:
                        break
                else:
                    in_write = False
            if not (by_write and writes >= target_writes):
                continue
        elif not by_write and time.monotonic() < deadline:
            continue
        os.kill(pid, signum)
        mid_write = in_write  # for SIGKILL, updated below by what the child reported before it died
        while True:  # until the child exits (at once for SIGKILL; after its save for SIGTERM)
            try:
                data = os.read(r, 4096)
            except OSError:
                break
            if not data:
                break
            if signum == signal.SIGKILL:
                for token in data.decode():
                    mid_write = token == "W"
        _, status = os.waitpid(pid, 0)
        os.close(r)
        return {
            "killed": True,
            "exit": os.waitstatus_to_exitcode(status),
            "mid_write": mid_write,
            "by_write": by_write,
            "writes": writes,
        }


def soak_mode(out: str, steps: int, save_async: bool, kills: int, rng: random.Random) -> dict[str, Any]:
    """A life stopped by SIGTERM, one by SIGINT, ``kills`` lives killed by SIGKILL, then
    one that finishes."""
    log_path = f"{out}.stderr.log"
    figures: dict[str, Any] = {
        "kills": 0,
        "kills_mid_write": 0,
        "kills_by_write_hook": 0,
        "lives": 0,
        "failed_lives": 0,
        "signals": [],
    }
    for signum, expected_exit in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        # another process sends the signal; the life must save (SIGTERM) or stop (SIGINT) and exit
        pid, r = fork_life(out, steps, save_async, log_path, report=True)
        figures["lives"] += 1
        outcome = kill_life(pid, r, rng, signum)
        if not outcome["killed"] or outcome["exit"] != expected_exit:
            raise SystemExit(
                f"{signal.Signals(signum).name}: {outcome}, expected exit {expected_exit}; see {log_path}"
            )
        figures["signals"].append(
            {
                "signal": signal.Signals(signum).name,
                "exit": outcome["exit"],
                "during_write": outcome["mid_write"],
            }
        )
    while figures["kills"] < kills:
        pid, r = fork_life(out, steps, save_async, log_path, report=True)
        figures["lives"] += 1
        outcome = kill_life(pid, r, rng)
        if not outcome["killed"]:
            figures["failed_lives"] += outcome["exit"] != 0
            if outcome["exit"] != 0:
                raise SystemExit(f"a life failed (exit {outcome['exit']}); see {log_path}")
            raise SystemExit(f"the run finished after only {figures['kills']} kills: raise --steps")
        assert outcome["exit"] == -signal.SIGKILL, outcome
        figures["kills"] += 1
        figures["kills_mid_write"] += outcome["mid_write"]
        figures["kills_by_write_hook"] += outcome["by_write"]
    pid, _ = fork_life(out, steps, save_async, log_path, report=False)
    figures["lives"] += 1
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"the last life failed; see {log_path}")
    return figures


def warm_up() -> None:
    """Pay the lazy imports once, before forking: creating the first optimizer imports
    ``torch._dynamo`` (seconds). The end-of-run training-curves plot is left out of the
    soak (it is matplotlib work, unrelated to checkpoints, and costs ~1 s a run)."""
    import torch

    import toolkit.trainer

    torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])
    toolkit.trainer.plot_training_curves = lambda *args, **kwargs: None


def soak(argv: list[str]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--modes", default="sync,async")
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=300)
    opts = parser.parse_args(argv)
    warm_up()

    rng = random.Random(opts.seed)
    result: dict[str, Any] = {}
    start = time.monotonic()
    pid, _ = fork_life(
        os.path.join(opts.out, "ref"), opts.steps, False, os.path.join(opts.out, "ref.log"), False
    )
    _, status = os.waitpid(pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit("the reference run failed")
    result["reference_s"] = round(time.monotonic() - start, 2)
    for mode in opts.modes.split(","):
        start = time.monotonic()
        result[mode] = soak_mode(os.path.join(opts.out, mode), opts.steps, mode == "async", opts.kills, rng)
        result[mode]["seconds"] = round(time.monotonic() - start, 2)
    print("@@RESULT@@ " + json.dumps(result), flush=True)


# ----------------------------------------------------------------------------- DDP
class KillRank(TrainerCallback):
    """SIGKILL this process when step ``step`` begins (as an OOM killer or a lost node would)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if state.global_step == self.step - 1:
            os.kill(os.getpid(), signal.SIGKILL)


def ddp(phase: str, out: str) -> None:
    rank = int(os.environ["RANK"])
    common = dict(ddp_find_unused_parameters=False, save_total_limit=None)
    if phase == "ddp-crash":
        trainer = make_trainer(os.path.join(out, "run"), DDP_STEPS, False, **common)
        if rank == 1:
            trainer.add_callback(KillRank(DDP_KILL_STEP))
        trainer.train()
        raise SystemExit("unreachable: rank 1 should have been killed")
    trainer = make_trainer(os.path.join(out, "run"), DDP_STEPS, False, **common)
    trainer.train(resume_from_checkpoint=True)
    finish(trainer)
    reference = make_trainer(os.path.join(out, "ref"), DDP_STEPS, False, **common)
    reference.train()
    finish(reference)
    if rank == 0:
        print("@@RESULT@@ " + json.dumps({"world_size": trainer.strategy.world_size}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "soak":
        soak(sys.argv[2:])
    else:
        ddp(sys.argv[1], sys.argv[2])
