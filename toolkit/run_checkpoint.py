"""Checkpoints of a `Trainer` run: what goes into a ``checkpoint-<step>`` folder, how a run
resumes from one, the best-model bookkeeping and the preemption (SIGTERM) save.

This is facade-level glue: it reads the trainer's parts and hands bytes to a
`CheckpointManager`; the storage work (atomic commit, manifest, rotation) lives in
`toolkit.checkpoint`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import signal
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import fsspec
import torch

from toolkit.callbacks.base import TrainerCallback, without_event_objects
from toolkit.checkpoint import (
    AsyncCheckpointIO,
    CheckpointCorruptedError,
    CheckpointIO,
    CheckpointManager,
    FsspecCheckpointIO,
    get_last_checkpoint,
)
from toolkit.checkpoint import files as storage
from toolkit.checkpoint.serialization import json_to_bytes, object_to_bytes, tensors_to_bytes
from toolkit.optim.optimizers import optimizer_state_like
from toolkit.state import TrainerState
from toolkit.strategies.base import Strategy
from toolkit.types import IntervalStrategy
from toolkit.utils.seed import get_rng_state

if TYPE_CHECKING:
    from toolkit.loops.training import TrainLoop
    from toolkit.trainer import Trainer

__all__ = ["RunCheckpointer", "PreemptionAgreement", "WEIGHTS_NAME", "SAFE_WEIGHTS_NAME"]

logger = logging.getLogger(__name__)

WEIGHTS_NAME = "pytorch_model.bin"
SAFE_WEIGHTS_NAME = "model.safetensors"
TRAINING_ARGS_NAME = "training_args.json"
#: Final files of a run in ``output_dir`` that a new run must not overwrite silently.
RUN_FILES = frozenset({SAFE_WEIGHTS_NAME, WEIGHTS_NAME, "trainer_state.json", "all_results.json"})
PREEMPTION_EXIT_CODE = 143  # 128 + SIGTERM, what schedulers expect from a preempted job


class RunCheckpointer:
    """Saves and restores everything a run needs to continue exactly.

    Args:
        trainer: the trainer whose parts are saved (model, optimizer, scheduler,
            precision, callbacks, state, arguments).
    """

    def __init__(self, trainer: Trainer) -> None:
        self.trainer = trainer
        args = trainer.args
        io: CheckpointIO = FsspecCheckpointIO()
        if args.save_async:
            io = AsyncCheckpointIO(io)
        self.manager = CheckpointManager(args.output_dir, io=io, save_total_limit=args.save_total_limit or None)
        self.preempted = False
        self._agreement: PreemptionAgreement | None = None  # several processes: agree before stopping
        self._written: set[str] = set()  # checkpoints saved by the current train() call
        self._resume_files: tuple[str, dict[str, Any]] | None = None  # verified by resolve_resume

    # ----------------------------------------------------------------- output_dir safety
    def _previous_run_files(self, resume_path: str | None) -> list[str]:
        """Files of an earlier run in ``output_dir`` that training would overwrite."""
        resume_step = _step_of(resume_path) if resume_path is not None else None
        if resume_path is not None and resume_step is None:  # e.g. a pushed ".../last-checkpoint"
            saved = self.manager.io.load(resume_path, names=["trainer_state.json"])["trainer_state.json"]
            resume_step = int(saved.get("global_step", 0))
        found = []
        for path in self.manager.list_checkpoints():
            step = _step_of(path)
            if resume_step is None or (step is not None and step > resume_step):
                found.append(path)
        if resume_path is None:
            names = set(self.manager.io.list(self.manager.root))
            found += [f"{self.manager.root}/{n}" for n in sorted(RUN_FILES & names)]
        return found

    def begin_run(self, resume_path: str | None) -> None:
        """Before training: refuse to overwrite an earlier run's files unless
        ``overwrite_output_dir`` allows it.

        Raises:
            ValueError: ``output_dir`` holds checkpoints or final files of an earlier run
                that this run would overwrite.
        """
        args = self.trainer.args
        self._written = set()
        if args.should_save and _is_file(args.output_dir):
            raise ValueError(
                f"output_dir={args.output_dir!r} is a file, not a folder: checkpoints and the model are saved "
                "into it. Choose a folder path."
            )
        if args.overwrite_output_dir or not args.should_save:
            return
        clash = self._previous_run_files(resume_path)
        if clash:
            shown = ", ".join(clash[:3]) + (f" and {len(clash) - 3} more" if len(clash) > 3 else "")
            hint = (
                "resume from the newest checkpoint (resume_from_checkpoint=True)"
                if resume_path is not None
                else "continue that run with resume_from_checkpoint=True"
            )
            raise ValueError(
                f"output_dir={args.output_dir!r} already holds files of an earlier run that this training would "
                f"overwrite ({shown}). To keep them, {hint} or choose another output_dir; to replace them, pass "
                "overwrite_output_dir=True."
            )

    # ----------------------------------------------------------------- saving
    def prepare_buffers(self) -> None:
        """With ``save_async``: have the background thread allocate the first save's
        copy buffers while training starts, so that the first save stalls no longer
        than the later ones. Skipped where the state is gathered with collectives
        (FSDP, DeepSpeed, XLA): their first save allocates as it copies."""
        t = self.trainer
        io = self.manager.io
        if not isinstance(io, AsyncCheckpointIO) or not t.args.should_save:
            return
        if t.args.save_strategy == IntervalStrategy.NO:
            return
        kind = type(t.strategy)
        if kind.model_state_dict is not Strategy.model_state_dict:
            return
        state: dict[str, Any] = {"weights": self._model_state()}
        if not t.args.save_only_model and t.optimizer is not None:
            if kind.optimizer_state_dict is Strategy.optimizer_state_dict:
                state["optimizer"] = optimizer_state_like(t.optimizer)
        io.prepare(state)

    def _model_state(self) -> dict[str, torch.Tensor]:
        t = self.trainer
        return {k: v.detach() for k, v in t.strategy.model_state_dict(t.model_wrapped).items()}

    def _weights_entry(self) -> tuple[str, Any]:
        state = self._model_state()
        return (SAFE_WEIGHTS_NAME, state) if self.trainer.args.save_safetensors else (WEIGHTS_NAME, state)

    def _stateful_callbacks(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for cb in self.trainer.callback_handler.callbacks:
            if callable(getattr(cb, "state_dict", None)):
                out[type(cb).__name__] = cb.state_dict()
        return out

    def _update_best(self, metrics: dict[str, float] | None, path: str) -> None:
        args, state = self.trainer.args, self.trainer.state
        if not metrics or args.metric_for_best_model is None:
            return
        name = args.metric_for_best_model
        key = name if name.startswith("eval_") else f"eval_{name}"
        if key not in metrics:
            logger.warning(
                "metric_for_best_model=%r: %r is not among the evaluation metrics %s; the best checkpoint is "
                "not updated.", name, key, sorted(metrics),
            )
            return
        value = float(metrics[key])
        if state.best_metric is None or (
            value > state.best_metric if args.greater_is_better else value < state.best_metric
        ):
            state.best_metric = value
            state.best_model_checkpoint = path

    def save_checkpoint(self, metrics: dict[str, float] | None) -> str | None:
        """Save ``checkpoint-<global_step>`` (weights, optimizer, scheduler, scaler, RNG,
        trainer state, loop position, arguments), update the best, rotate old ones.

        Every process calls it: the RNG states of all processes are gathered first (one
        ``rng_state_<rank>.pth`` each when there are several), only the saving process
        (``args.should_save``) writes, and all of them wait at a barrier until it is done.
        """
        rng_files = {} if self.trainer.args.save_only_model else self._rng_files()
        path = self._write_checkpoint(metrics, rng_files)
        strategy = self.trainer.strategy
        if getattr(strategy, "sharded_checkpoint", False):
            # FSDP SHARDED_STATE_DICT: every process writes its DCP shards into the committed folder
            self.wait()
            folder = strategy.broadcast(path)
            if folder is not None:
                strategy.save_checkpoint(folder, None if self.trainer.args.save_only_model else self.trainer.optimizer)
            return path
        strategy.barrier()
        if getattr(strategy, "saves_own_checkpoint", False) and not self.trainer.args.save_only_model:
            # e.g. DeepSpeed: every process writes its shards (model, optimizer, scheduler) in its own format
            folder = strategy.broadcast(path)
            if folder is not None:
                strategy.save_checkpoint(folder)
                strategy.barrier()
        return path

    def _rng_files(self) -> dict[str, Any]:
        strategy = self.trainer.strategy
        if strategy.world_size == 1:
            return {"rng_state.pth": get_rng_state()}
        states = strategy.all_gather_object(get_rng_state())
        return {f"rng_state_{rank}.pth": state for rank, state in enumerate(states)}

    def _rng_for_this_process(self, files: dict[str, Any], path: str) -> dict[str, Any] | None:
        strategy = self.trainer.strategy
        name = "rng_state.pth" if strategy.world_size == 1 else f"rng_state_{strategy.global_rank}.pth"
        if name in files:
            return files[name]
        other = "rng_state_0.pth" if strategy.world_size == 1 else "rng_state.pth"
        if other in files or any(n.startswith("rng_state") for n in files):
            logger.warning(
                "%s holds no %s (saved with another number of processes); using %s: the random numbers "
                "will not continue exactly.", path, name, other if other in files else "none",
            )
        return files.get(other)

    def _write_checkpoint(self, metrics: dict[str, float] | None, rng_files: dict[str, Any]) -> str | None:
        t = self.trainer
        step = t.state.global_step
        path = self.manager.path_for(step)
        io = self.manager.io
        if io.list(path) and not io.exists(path) and not io.is_partial(path):
            # e.g. a folder of another tool, or one whose manifest was lost: never overwrite it
            # (nor count it as the best), and do not stop a run that resumed from an earlier one
            logger.warning(
                "Not saving the checkpoint of step %d: %s exists and is not a committed toolkit checkpoint; "
                "it is left untouched.", step, path,
            )
            return None
        self._update_best(metrics, path)
        t.store_flos()
        t.state.stateful_callbacks = self._stateful_callbacks()
        # gathered on every process first: a sharded strategy (FSDP) gathers with collectives
        sharded = getattr(t.strategy, "sharded_checkpoint", False)  # weights and optimizer in DCP shards
        weights = None if sharded else self._weights_entry()
        own_format = sharded or getattr(t.strategy, "saves_own_checkpoint", False)  # optimizer saved by the strategy
        optimizer_state = None if t.args.save_only_model or own_format else t.strategy.optimizer_state_dict(t.optimizer)
        # the losses since the last log, averaged over processes: also a collective
        loop_state = None if t.args.save_only_model else self._loop_state()
        if not t.args.should_save:
            return None
        files: dict[str, Any] = dict([weights]) if weights is not None else {}
        if not t.args.save_only_model:
            if not own_format:
                files["optimizer.pt"] = optimizer_state
            if t.lr_scheduler is not None:
                files["scheduler.pt"] = t.lr_scheduler.state_dict()
            scaler = t.precision.state_dict()
            if scaler:
                files["scaler.pt"] = scaler
            files.update(rng_files)
            files["loop_state.json"] = loop_state
        files["trainer_state.json"] = _state_dict(t.state)
        files[TRAINING_ARGS_NAME] = t.args.to_dict()
        if path in self._written:
            logger.info("Checkpoint %s already saved at this step; keeping it.", path)
            return path
        overwrite = io.exists(path)  # only reachable with overwrite_output_dir (see begin_run)
        if t.args.save_async:
            # rotate the earlier ones first: the save just started is still being written
            self.manager.rotate(best=t.state.best_model_checkpoint)
            self.manager.save(step, files, overwrite=overwrite)
        else:
            self.manager.save(step, files, overwrite=overwrite)
            self.manager.rotate(best=t.state.best_model_checkpoint)
        self._written.add(path)
        hub = getattr(t, "hub_sync", None)
        if hub is not None:  # push_to_hub: hand the saved files to the background pusher
            hub.checkpoint_saved(path, files)
        return path

    def _loop_state(self) -> dict[str, Any]:
        loop = getattr(self.trainer, "_loop", None)
        return {} if loop is None else loop.state_dict(synchronize=True)

    def save_model(self, output_dir: str) -> None:
        """Save the weights, the tokenizer (when it can save itself) and the arguments."""
        t = self.trainer
        if getattr(t.strategy, "saves_sharded_model", False):  # fsdp_config final_state_dict_type=SHARDED_STATE_DICT
            _fsdp().save_sharded_checkpoint(os.fspath(output_dir), t.strategy.unwrap(t.model_wrapped))  # every process
            if t.args.should_save:
                storage.write_bytes(storage.join(os.fspath(output_dir), TRAINING_ARGS_NAME),
                                    json_to_bytes(t.args.to_dict()))
            return
        state = self._model_state()  # on every process: a sharded strategy gathers with collectives
        if not t.args.should_save:
            return
        output_dir = os.fspath(output_dir)
        storage.makedirs(output_dir)
        model = t.strategy.unwrap(t.model_wrapped)
        pretrained = hasattr(model, "save_pretrained")
        tokenizer = t.tokenizer if hasattr(t.tokenizer, "save_pretrained") else None
        if pretrained or tokenizer is not None:
            # save_pretrained writes local files only: remote output_dirs get a staged upload
            with storage.staged_dir(output_dir) as local_dir:
                if pretrained:
                    model.save_pretrained(local_dir, state_dict=state, safe_serialization=t.args.save_safetensors)
                if tokenizer is not None:
                    tokenizer.save_pretrained(local_dir)
        if not pretrained:
            name, data = (
                (SAFE_WEIGHTS_NAME, tensors_to_bytes(state)) if t.args.save_safetensors
                else (WEIGHTS_NAME, object_to_bytes(state))
            )
            storage.write_bytes(storage.join(output_dir, name), data)
        storage.write_bytes(storage.join(output_dir, TRAINING_ARGS_NAME), json_to_bytes(t.args.to_dict()))

    # ----------------------------------------------------------------- resuming
    def resolve_resume(self, resume_from_checkpoint: str | bool | None) -> str | None:
        """The checkpoint folder to resume from, checked before training starts.

        Raises:
            ValueError: ``True`` but no valid checkpoint in ``output_dir``, or a path that
                is not a valid checkpoint.
        """
        self._resume_files = None
        if resume_from_checkpoint is None or resume_from_checkpoint is False:
            return None
        if resume_from_checkpoint is True:
            for path in reversed(self.manager.list_checkpoints()):
                if self._load_verified(path):
                    return path
            last = get_last_checkpoint(self.trainer.args.output_dir)
            if last is None:
                raise ValueError(
                    f"resume_from_checkpoint=True: no valid checkpoint found in output_dir "
                    f"{self.trainer.args.output_dir!r}"
                )
            raise ValueError(f"resume_from_checkpoint=True: the newest checkpoint {last!r} is not valid")
        if not isinstance(resume_from_checkpoint, (str, os.PathLike)):
            raise TypeError(
                "resume_from_checkpoint must be a checkpoint folder (str or path), True (the newest in "
                f"output_dir), or False/None; got {type(resume_from_checkpoint).__name__} {resume_from_checkpoint!r}"
            )
        path = os.fspath(resume_from_checkpoint)
        if not self.manager.io.exists(path):
            raise ValueError(
                f"resume_from_checkpoint={path!r} is not a valid checkpoint folder (missing, or written "
                "without a commit manifest)"
            )
        try:
            self._resume_files = (path, self.manager.io.load(path, map_location="cpu"))  # verified, kept
        except CheckpointCorruptedError as exc:
            raise ValueError(f"resume_from_checkpoint={path!r} is damaged: {exc}") from exc
        return path

    def _load_verified(self, path: str) -> bool:
        """Load ``path`` with every checksum verified and keep it for `load_for_resume`
        (one read of the checkpoint, not a verification pass and then a load). Local
        files are memory-mapped, so holding them until then costs next to nothing."""
        try:
            self._resume_files = (path, self.manager.io.load(path, map_location="cpu"))
        except FileNotFoundError:
            return False
        except CheckpointCorruptedError as exc:
            logger.warning("Checkpoint %s is not valid: %s", path, exc)
            return False
        return True

    def load_for_resume(self, path: str, loop: TrainLoop) -> None:
        """Restore the run saved at ``path`` into the trainer's parts and ``loop``."""
        t = self.trainer
        kept, self._resume_files = self._resume_files, None  # loaded and verified by resolve_resume
        files = kept[1] if kept is not None and kept[0] == path else self.manager.io.load(path, map_location="cpu")
        weights = files.get(SAFE_WEIGHTS_NAME, files.get(WEIGHTS_NAME))
        sharded = weights is None and _fsdp().is_sharded_checkpoint(path)  # FSDP SHARDED_STATE_DICT: DCP shards
        if weights is None and not sharded:
            raise ValueError(f"resume_from_checkpoint={path!r} holds no model weights")
        if getattr(t.strategy, "saves_own_checkpoint", False):  # weights, optimizer, scheduler in its format
            t.strategy.load_checkpoint(path)
        elif sharded:  # resharded to this run's processes, whatever their number
            _fsdp().load_sharded_checkpoint(path, t.strategy.unwrap(t.model_wrapped), t.optimizer)
        else:
            _load_weights(t, weights, path)
            if "optimizer.pt" not in files:
                raise ValueError(
                    f"resume_from_checkpoint={path!r} holds no optimizer state (saved with save_only_model)"
                )
            t.strategy.load_optimizer_state_dict(t.optimizer, files["optimizer.pt"])
        if "scheduler.pt" in files and t.lr_scheduler is not None:
            t.lr_scheduler.load_state_dict(files["scheduler.pt"])
        if "scaler.pt" in files:
            t.precision.load_state_dict(files["scaler.pt"])
        saved = TrainerState(**{k: v for k, v in files["trainer_state.json"].items() if k in TrainerState.__dataclass_fields__})
        state = t.state
        for name in ("global_step", "epoch", "log_history", "best_metric", "best_model_checkpoint", "total_flos",
                     "stateful_callbacks", "trial_name", "trial_params"):
            setattr(state, name, getattr(saved, name))
        for cb in t.callback_handler.callbacks:
            saved_cb = state.stateful_callbacks.get(type(cb).__name__)
            if saved_cb is not None and callable(getattr(cb, "load_state_dict", None)):
                cb.load_state_dict(saved_cb)
        loop.resume(files.get("loop_state.json") or {}, rng_state=self._rng_for_this_process(files, path),
                    skip_data=not t.args.ignore_data_skip)
        logger.info("Resuming from %s at step %d", path, state.global_step)

    def load_best_model(self) -> None:
        """Load the weights of ``state.best_model_checkpoint`` (``load_best_model_at_end``).
        Every process calls it; each waits until the saving process has finished writing."""
        t = self.trainer
        self.wait()
        t.strategy.barrier()
        best = t.state.best_model_checkpoint
        if best is None:
            logger.warning("load_best_model_at_end: no best checkpoint was recorded; keeping the last weights.")
            return
        files = self.manager.io.load(best, map_location="cpu")
        weights = files.get(SAFE_WEIGHTS_NAME, files.get(WEIGHTS_NAME))
        if weights is None and _fsdp().is_sharded_checkpoint(best):
            _fsdp().load_sharded_checkpoint(best, t.strategy.unwrap(t.model_wrapped))
        else:
            _load_weights(t, weights, best)
        logger.info("Loaded the best model from %s (score %s).", best, t.state.best_metric)

    def wait(self, release: bool = False) -> None:
        """Block until background checkpoint writes finish; re-raise their errors.
        ``release``: also free the snapshot buffers (as large as the state saved)."""
        io = self.manager.io
        if isinstance(io, AsyncCheckpointIO):
            if release:
                io.release_buffers()
            else:
                io.wait()

    def finish(self) -> None:
        """End of training: wait for background saves (and free their snapshot buffers, as
        large as the state saved), rotate once more, and exit after a preemption save."""
        self.wait(release=True)
        hub = getattr(self.trainer, "hub_sync", None)
        if hub is not None:  # pushes still running finish now; their errors surface here
            hub.wait()
        if self.trainer.args.should_save:
            self.manager.rotate(best=self.trainer.state.best_model_checkpoint)
        agreement, self._agreement = self._agreement, None
        if agreement is not None and not self.preempted and agreement.agree():
            self.preempted = True  # signalled after the last agreement (e.g. training was ending): exit together
        if self.preempted:
            logger.warning(
                "Training stopped on a termination signal at step %d; a checkpoint was saved. Resume with "
                "train(resume_from_checkpoint=True).", self.trainer.state.global_step,
            )
            raise SystemExit(PREEMPTION_EXIT_CODE)

    def interrupted(self) -> None:
        """Ctrl-C (SIGINT, ``KeyboardInterrupt``) stopped training: nothing is saved for the
        current step. Background saves already started are completed (a second Ctrl-C
        abandons them; an unfinished one is never committed), and one log line says where
        to resume from."""
        try:
            self.wait()
        except Exception as exc:  # the interrupt is what the user is told about; this is extra
            logger.error("A background checkpoint save failed: %s", exc)
        latest = self.manager.latest() if self.trainer.args.should_save else None
        logger.warning(
            "Training interrupted (SIGINT) at step %d; this step was not saved. %s",
            self.trainer.state.global_step,
            f"The newest checkpoint is {latest}: resume with train(resume_from_checkpoint=True)."
            if latest else "No checkpoint was saved.",
        )

    # ----------------------------------------------------------------- preemption
    #: With several processes, the processes agree on a pending stop every this many
    #: optimizer steps (and at save and stop boundaries): one all-reduce of one number.
    preemption_sync_steps: int = 10

    @contextlib.contextmanager
    def preemption_guard(self, loop: TrainLoop) -> Iterator[None]:
        """While training, SIGTERM (and SIGUSR1) ask the loop to save and stop at the next
        step boundary. The handler only sets a flag.

        With several processes the signal may reach only some of them, and the save is a
        collective: the handler then only marks this process, and the processes agree
        (`PreemptionAgreement`) every ``preemption_sync_steps`` steps, at save or stop
        boundaries and at the last step, so that all stop and save at the same step."""
        if not self.trainer.args.preemption_checkpoint or threading.current_thread() is not threading.main_thread():
            yield
            return
        strategy = self.trainer.strategy
        agreement = None
        if strategy.world_size > 1:
            agreement = PreemptionAgreement(strategy, loop, self, every=self.preemption_sync_steps)
            self.trainer.callback_handler.add_callback(agreement)
        self._agreement = agreement

        def handler(signum: int, frame: Any) -> None:
            if agreement is not None:
                agreement.signalled = True
                return
            self.preempted = True
            loop.request_stop(save=True)

        signals = [signal.SIGTERM] + ([signal.SIGUSR1] if hasattr(signal, "SIGUSR1") else [])
        previous = {s: signal.signal(s, handler) for s in signals}
        try:
            yield
        finally:
            for s, h in previous.items():
                signal.signal(s, h)
            if agreement is not None:
                self.trainer.callback_handler.remove_callback(agreement)


class PreemptionAgreement(TrainerCallback):
    """Agrees across processes on a stop that a termination signal asked for.

    The signal handler sets `signalled` on the processes it reached. At the end of an
    optimizer step that is due (every ``every`` steps, a step that saves or stops, the
    last step) every process adds its flag with one all-reduce; if any was set, all of
    them mark the run preempted and ask the loop to save and stop at this same step.
    Other steps cost one modulo: no collective, no host sync.

    Args:
        strategy: supplies the all-reduce (`Strategy.reduce`).
        loop: the `TrainLoop` to stop.
        checkpointer: marked ``preempted`` (training then exits with code 143).
        every: optimizer steps between two agreements.
    """

    def __init__(self, strategy: Any, loop: TrainLoop, checkpointer: RunCheckpointer, every: int = 10) -> None:
        if every < 1:
            raise ValueError(f"preemption_sync_steps={every} must be >= 1")
        self.strategy, self.loop, self.checkpointer, self.every = strategy, loop, checkpointer, int(every)
        self.signalled = False
        self.agreements = 0  # all-reduces run (for the overhead figures in docs/distributed.md)

    def agree(self) -> bool:
        """One all-reduce: True when any process was signalled (a collective)."""
        self.agreements += 1
        flag = torch.tensor(1.0 if self.signalled else 0.0)
        return bool(self.strategy.reduce(flag, "sum").item() > 0)

    @without_event_objects
    def on_step_end(self, args: Any, state: TrainerState, control: Any, **kwargs: Any) -> None:
        """Agree at a due step; stop and save everywhere when a process was signalled."""
        due = (state.global_step % self.every == 0 or state.global_step >= state.max_steps
               or control.should_save or control.should_training_stop)
        if due and self.agree():
            self.checkpointer.preempted = True
            self.loop.request_stop(save=True)


def _fsdp() -> Any:
    """The FSDP strategy module, imported on first use: it pulls in torch.distributed's FSDP
    and checkpoint packages, which runs that never shard should not pay for at import."""
    from toolkit.strategies import fsdp

    return fsdp


def _state_dict(state: TrainerState) -> dict[str, Any]:
    return dataclasses.asdict(state)


def _load_weights(trainer: Trainer, weights: dict[str, torch.Tensor], path: str) -> None:
    try:
        trainer.strategy.load_model_state_dict(trainer.model_wrapped, weights, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"The checkpoint {path!r} does not fit this model: {exc}") from exc


def _is_file(path: str) -> bool:
    """True when ``path`` (local or fsspec URL) exists and is not a folder."""
    fs, fs_path = fsspec.core.url_to_fs(path)
    return fs.exists(fs_path) and not fs.isdir(fs_path)


def _step_of(path: str | None) -> int | None:
    match = re.search(r"-(\d+)/?$", path or "")
    return int(match.group(1)) if match else None
