"""`TrainLoop`: epochs, accumulation windows, clipping, optimizer and scheduler steps,
callback events and the log / evaluate / save triggers.

The loop owns loss normalisation: each micro-batch's mean loss is weighted so that an
accumulation window gives the same update as one large batch (see `LossNormalization`).
The step function does forward and backward; the loop decides the weight and steps.
Nothing here knows about `TrainingArguments`: every setting is a constructor parameter.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from toolkit.callbacks.base import CallbackHandler
from toolkit.loops.steps import compute_loss, count_items
from toolkit.state import TrainerControl, TrainerState
from toolkit.strategies.base import SingleDeviceStrategy, Strategy
from toolkit.types import LossNormalization

__all__ = ["TrainLoop", "StepFn", "make_training_step", "NAN_INF_POLICIES"]

logger = logging.getLogger(__name__)

StepFn = Callable[[nn.Module, Any, float], torch.Tensor]
"""``step_fn(model, batch, loss_scale) -> detached scaled loss``: runs forward, multiplies
the loss by ``loss_scale``, back-propagates, and returns the scaled loss detached."""

NAN_INF_POLICIES = ("warn", "skip", "raise")

_UNIT_SCALE = (1.0,)  # the weight of a lone micro-batch on one process (shared, never mutated)


def make_training_step(
    strategy: Strategy, loss_fn: Callable[[nn.Module, Any], torch.Tensor] | None = None
) -> StepFn:
    """Build the default step function for a strategy.

    Args:
        strategy: moves the batch, provides autocast and backward.
        loss_fn: ``loss_fn(model, batch) -> loss``; defaults to the model's own loss
            (`toolkit.loops.steps.compute_loss`).
    """
    loss_fn = loss_fn or compute_loss
    autocasts = strategy.autocasts  # fp32 on one device: no context to enter per step

    def step(model: nn.Module, batch: Any, loss_scale: float) -> torch.Tensor:
        if not model.training:  # the loop puts the model back in train mode after evaluations
            model.train()
        batch = strategy.batch_to_device(batch)
        if autocasts:
            with strategy.autocast():
                loss = loss_fn(model, batch)
        else:
            loss = loss_fn(model, batch)
        if loss_scale != 1.0:
            loss = loss * loss_scale
        strategy.backward(loss)
        return loss.detach()

    return step


def _windows(iterator: Iterator, size: int) -> Iterator[Sequence]:
    """Group an iterator into windows of ``size`` items (the last may be shorter)."""
    if size == 1:
        for batch in iterator:
            yield (batch,)
        return
    while True:
        window = []
        for batch in iterator:
            window.append(batch)
            if len(window) == size:
                break
        if not window:
            return
        yield window
        if len(window) < size:
            return


class LossTracker:
    """Accumulates micro-batch losses on the device without a host sync per step.

    Each loss (a 0-dim tensor) is kept in a list; at log time (or every ``capacity``
    losses) they are stacked and folded into four running sums: finite sum, finite
    count, count and raw sum. A logged loss can then leave non-finite values out and
    the number of non-finite values is known, so they are reported instead of passing
    silently. A step only appends to a list, which costs less than the indexed copy into
    a preallocated buffer it replaces; the fold's stack is the one tensor operation.

    Args:
        device: where the running sums live (the device of the losses).
        capacity: losses held before folding.
    """

    def __init__(self, device: torch.device | str = "cpu", capacity: int = 256) -> None:
        if capacity < 1:
            raise ValueError(f"capacity={capacity} must be >= 1")
        self.capacity = capacity
        self.pending: list[torch.Tensor] = []
        self.sums = torch.zeros(
            4, device=device, dtype=torch.float64 if str(device) != "mps" else torch.float32
        )

    @property
    def count(self) -> int:
        """Losses recorded since the last fold."""
        return len(self.pending)

    def add(self, loss: torch.Tensor) -> None:
        """Record one micro-batch's (scaled, detached, 0-dim) loss."""
        pending = self.pending
        # a custom step that forgot to detach must not keep its graph alive
        pending.append(loss.detach() if loss.requires_grad else loss)
        if len(pending) >= self.capacity:
            self._fold()

    def _fold(self) -> None:
        if not self.pending:
            return
        values = torch.stack(self.pending).to(self.sums.dtype)
        self.pending = []
        finite = torch.isfinite(values)
        self.sums += torch.stack(
            [torch.where(finite, values, 0).sum(), finite.sum(), values.new_tensor(values.numel()), values.sum()]
        )

    def sums_so_far(self, strategy: Strategy | None = None) -> list[float]:
        """The four running sums since the last pop (one host sync), without resetting
        them; with a strategy, averaged across processes (a collective)."""
        self._fold()
        sums = self.sums if strategy is None else strategy.reduce(self.sums.clone(), "mean")
        return sums.tolist()

    def restore(self, sums: Sequence[float]) -> None:
        """Start from sums given by `sums_so_far` (a resumed run's window)."""
        self._fold()
        self.sums.copy_(torch.tensor([float(v) for v in sums], dtype=self.sums.dtype))

    def pop(self, strategy: Strategy | None = None) -> tuple[float, float, int]:
        """Return ``(filtered_sum, raw_sum, n_nonfinite)`` since the last pop, and reset.

        ``filtered_sum`` replaces each non-finite value by the mean of the finite ones
        (so it is comparable to ``raw_sum`` when all are finite). With a strategy, the
        sums are averaged across processes first (one collective, one host sync).
        """
        finite_sum, n_finite, n_total, raw_sum = self.sums_so_far(strategy)
        self.sums.zero_()
        if n_finite > 0:
            filtered = finite_sum * n_total / n_finite
        else:  # nothing recorded since the last pop counts as 0, all non-finite as NaN
            filtered = float("nan") if n_total > 0 else 0.0
        world = strategy.world_size if strategy is not None else 1
        return filtered, raw_sum, round((n_total - n_finite) * world)


class TrainLoop:
    """The training loop, usable with or without the `Trainer` facade.

    Args:
        model: the module the forward pass uses (already set up by the strategy).
        optimizer: the optimizer.
        train_dataloader: an iterable of batches (re-iterated each epoch).
        step_fn: forward + backward for one micro-batch (see `StepFn`); defaults to
            `make_training_step(strategy)`.
        lr_scheduler: stepped after each optimizer step that was not skipped
            (a ``ReduceLROnPlateau`` is stepped after evaluations instead).
        strategy: device and collectives; defaults to `SingleDeviceStrategy`.
        max_steps: number of optimizer steps to run.
        num_epochs: upper bound of passes over the data (``None``: as many as needed).
        gradient_accumulation_steps: micro-batches per optimizer step.
        max_grad_norm: clip the gradient norm to this value (``None`` or 0: no clipping).
        loss_normalization: ``"items"`` (default) or ``"micro_batch"`` (HF 4.34).
        label_names: keys whose non -100 entries are the items a loss averages over.
        callbacks: fires the `TrainerCallback` events; the loop obeys ``control``.
        args: passed to callbacks as their ``args`` (a `TrainingArguments` or any object).
        state: the `TrainerState` to advance (a new one by default).
        control: the `TrainerControl` (a new one by default).
        log_fn: called with ``{"loss", "learning_rate"}`` when ``control.should_log``.
        evaluate_fn: called when ``control.should_evaluate``; returns metrics.
        save_fn: called with the last metrics when ``control.should_save``.
        plateau_metric: metric key a ``ReduceLROnPlateau`` scheduler steps on.
        logging_nan_inf_filter: replace a non-finite micro-batch loss by the running mean
            in the logged loss (the update is not changed; see ``nan_inf_policy``).
        nan_inf_policy: ``"warn"`` (log it), ``"skip"`` (drop that update) or ``"raise"``.
        steps_per_epoch: optimizer steps in one epoch (for ``state.epoch``), when known.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> class Reg(nn.Module):
        ...     def __init__(self):
        ...         super().__init__(); self.lin = nn.Linear(2, 1)
        ...     def forward(self, x, labels):
        ...         return {"loss": nn.functional.mse_loss(self.lin(x).squeeze(-1), labels)}
        >>> model = Reg()
        >>> data = [{"x": torch.randn(4, 2), "labels": torch.randn(4)} for _ in range(8)]
        >>> loop = TrainLoop(model, torch.optim.SGD(model.parameters(), lr=0.1), data, max_steps=4,
        ...                  gradient_accumulation_steps=2)
        >>> loop.run() > 0, loop.state.global_step
        (True, 4)
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        train_dataloader: Iterable,
        *,
        step_fn: StepFn | None = None,
        lr_scheduler: Any | None = None,
        strategy: Strategy | None = None,
        max_steps: int,
        num_epochs: int | None = None,
        gradient_accumulation_steps: int = 1,
        max_grad_norm: float | None = None,
        loss_normalization: str | LossNormalization = LossNormalization.ITEMS,
        label_names: Sequence[str] = ("labels",),
        callbacks: CallbackHandler | None = None,
        args: Any = None,
        state: TrainerState | None = None,
        control: TrainerControl | None = None,
        log_fn: Callable[[dict[str, float]], None] | None = None,
        evaluate_fn: Callable[[], dict[str, float] | None] | None = None,
        save_fn: Callable[[dict[str, float] | None], None] | None = None,
        plateau_metric: str = "eval_loss",
        logging_nan_inf_filter: bool = True,
        nan_inf_policy: str = "warn",
        steps_per_epoch: int | None = None,
    ) -> None:
        if max_steps <= 0:
            raise ValueError(f"max_steps={max_steps} must be a positive number of optimizer steps")
        if gradient_accumulation_steps < 1:
            raise ValueError(f"gradient_accumulation_steps={gradient_accumulation_steps} must be >= 1")
        if nan_inf_policy not in NAN_INF_POLICIES:
            raise ValueError(f"nan_inf_policy={nan_inf_policy!r} is not valid; accepted: {NAN_INF_POLICIES}")
        self.model = model
        self.optimizer = optimizer
        self.train_dataloader = train_dataloader
        self.strategy = strategy or SingleDeviceStrategy()
        self.step_fn = step_fn or make_training_step(self.strategy)
        self.lr_scheduler = lr_scheduler
        self.max_steps = int(max_steps)
        self.num_epochs = num_epochs
        self.gradient_accumulation_steps = int(gradient_accumulation_steps)
        self.max_grad_norm = max_grad_norm
        self.loss_normalization = LossNormalization(loss_normalization)
        self.label_names = tuple(label_names)
        self.callbacks = callbacks or CallbackHandler()
        self.args = args
        self.state = state or TrainerState()
        self.control = control or TrainerControl()
        self.log_fn = log_fn
        self.evaluate_fn = evaluate_fn
        self.save_fn = save_fn
        self.plateau_metric = plateau_metric
        self.logging_nan_inf_filter = logging_nan_inf_filter
        self.nan_inf_policy = nan_inf_policy
        self.steps_per_epoch = steps_per_epoch
        self.is_plateau = isinstance(lr_scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
        # progress within the current epoch, in micro-batches (the data position)
        self.epoch = 0
        self.batches_in_epoch = 0
        self.total_loss = 0.0
        self._last_logged_step = 0
        self._stop_requested = False
        self._stop_with_save = False
        self._pending_rng: dict[str, Any] | None = None
        self._pending_loss_window: dict[str, Any] | None = None

    # --------------------------------------------------------------------------------
    def state_dict(self, synchronize: bool = False) -> dict[str, Any]:
        """Loop progress: the epoch and the micro-batches consumed in it, and, while
        `run` is training, the losses summed since the last log (so that a resumed
        run logs the same losses as an uninterrupted one).

        Args:
            synchronize: Average the loss sums across processes first: a collective,
                which every process must then call. Without it a process saves its own.
        """
        state: dict[str, Any] = {"epoch": self.epoch, "batches_in_epoch": self.batches_in_epoch}
        losses = getattr(self, "losses", None)
        if losses is not None:
            strategy = self.strategy if synchronize and self.strategy.world_size > 1 else None
            state["loss_window"] = {"sums": losses.sums_so_far(strategy), "since_step": self._last_logged_step}
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore progress saved by `state_dict` (the loss window is taken up by `run`)."""
        self.epoch = int(state["epoch"])
        self.batches_in_epoch = int(state["batches_in_epoch"])
        self._pending_loss_window = state.get("loss_window")

    def resume(
        self, progress: dict[str, Any], rng_state: dict[str, Any] | None = None, skip_data: bool = True
    ) -> None:
        """Continue a saved run: restore the data position and, at the matching moment
        of `run`, the random-number generators.

        Args:
            progress: what `state_dict` returned when the checkpoint was saved.
            rng_state: what `toolkit.utils.seed.get_rng_state` returned then.
            skip_data: start the epoch where it stopped (False: from its first batch,
                as ``ignore_data_skip`` asks).
        """
        if progress:
            self.load_state_dict(progress)
        if not skip_data:
            self.batches_in_epoch = 0
        self._pending_rng = rng_state

    def request_stop(self, save: bool = True) -> None:
        """Ask the loop to stop after the current optimizer step (and save first when
        ``save``). Safe to call from a signal handler: it only sets flags."""
        self._stop_with_save = self._stop_with_save or save
        self._stop_requested = True

    def _restore_rng(self) -> None:
        if self._pending_rng is not None:
            from toolkit.utils.seed import set_rng_state

            set_rng_state(self._pending_rng)
            self._pending_rng = None

    def _start_epoch(self, batches_per_epoch: int | None) -> Iterator:
        """Position the sampler for this epoch (O(1) mid-epoch resume) and open the iterator."""
        if batches_per_epoch is not None and self.batches_in_epoch >= batches_per_epoch:
            self.epoch += 1  # the checkpoint was taken at the very end of an epoch
            self.batches_in_epoch = 0
        loader = self.train_dataloader
        sampler = getattr(loader, "sampler", None)
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(self.epoch)
        skip = self.batches_in_epoch
        if skip and hasattr(sampler, "load_state_dict") and hasattr(sampler, "seed"):
            batch_size = getattr(loader, "batch_size", None) or 1
            sampler.load_state_dict(
                {"epoch": self.epoch, "seed": sampler.seed, "position": skip * batch_size}
            )
            skip = 0
        if self.batches_in_epoch == 0:
            self._restore_rng()  # saved between epochs: the iterator draws from the restored state
        iterator = iter(loader)
        self._restore_rng()  # saved mid-epoch: the iterator of that epoch already existed
        if skip:
            logger.warning(
                "The training sampler cannot resume mid-epoch; skipping %d batches by iterating over them.",
                skip,
            )
            for _ in range(skip):
                next(iterator, None)
        return iterator

    # --------------------------------------------------------------------------------
    def _loss_scales(self, window: list) -> Sequence[float]:
        n = len(window)
        if self.loss_normalization is LossNormalization.MICRO_BATCH:
            # every micro-batch, even one alone in a short last window (as HF 4.34 does)
            return [1.0 / self.gradient_accumulation_steps] * n
        if n == 1 and self.strategy.world_size == 1:
            return _UNIT_SCALE
        counts = [count_items(b, self.label_names) for b in window]
        local_total = sum(counts)
        total = local_total
        world = self.strategy.world_size
        if world > 1:
            total = int(self.strategy.reduce(torch.tensor(float(local_total)), "sum").item())
        if total == 0:
            return [1.0 / n] * n
        # Gradients are averaged over ranks by the strategy, hence the factor `world`.
        return [c * world / total for c in counts]

    def _current_lr(self) -> float:
        if self.lr_scheduler is not None and not self.is_plateau:
            return float(self.lr_scheduler.get_last_lr()[0])
        return float(self.optimizer.param_groups[0]["lr"])

    def _log(self) -> None:
        steps = self.state.global_step - self._last_logged_step
        filtered, raw, n_bad = self.losses.pop(self.strategy)
        value = filtered if self.logging_nan_inf_filter else raw
        if n_bad:
            logger.warning(
                "The training loss was NaN or inf in %d micro-batch(es) between steps %d and %d%s.",
                n_bad,
                self._last_logged_step + 1,
                self.state.global_step,
                " (left out of the logged loss)" if self.logging_nan_inf_filter else "",
            )
        self.total_loss += value
        self._last_logged_step = self.state.global_step
        logs = {"loss": round(value / max(steps, 1), 4), "learning_rate": self._current_lr()}
        if self.log_fn is not None:
            self.log_fn(logs)

    def _log_evaluate_save(self) -> None:
        """Log, evaluate and save as the control asks. A stop asked for meanwhile (a
        SIGTERM during a long evaluation) takes effect at this step, with its save,
        instead of one step later."""
        was_stopping = self._stop_requested
        control = self.control
        if control.should_log and self.state.global_step > self._last_logged_step:
            self._log()
        control.should_log = False
        metrics = None
        if control.should_evaluate:
            metrics = self.evaluate_fn() if self.evaluate_fn is not None else None
            if self.is_plateau and metrics:
                if self.plateau_metric not in metrics:
                    raise KeyError(
                        f"metric {self.plateau_metric!r} for the ReduceLROnPlateau scheduler is not among "
                        f"the evaluation metrics {sorted(metrics)}"
                    )
                self.lr_scheduler.step(metrics[self.plateau_metric])
            control.should_evaluate = False
        stop_arrived = self._stop_requested and not was_stopping
        if stop_arrived:
            control.should_save = control.should_save or self._stop_with_save
        if control.should_save:
            if self.save_fn is not None:
                self.save_fn(metrics)
            self.control = self.callbacks.on_save(self.args, self.state, control)
        if self._stop_requested and not was_stopping:  # asked for during the log, evaluation or save
            self.control.should_training_stop = True

    def _check_nonfinite(self, tr_loss_window: torch.Tensor) -> bool:
        """For the 'skip' and 'raise' policies: True when the window's loss is finite."""
        if bool(torch.isfinite(tr_loss_window)):
            return True
        if self.nan_inf_policy == "raise":
            raise FloatingPointError(
                f"The training loss is {tr_loss_window.item()} at step {self.state.global_step + 1} "
                "(nan_inf_policy='raise')."
            )
        logger.warning(
            "Skipping the update of step %d: the training loss is %s (nan_inf_policy='skip').",
            self.state.global_step + 1,
            tr_loss_window.item(),
        )
        return False

    # --------------------------------------------------------------------------------
    def run(self) -> float:
        """Train until ``max_steps`` optimizer steps or a callback stops it.

        Returns:
            The mean training loss per optimizer step over the steps run by this call.
        """
        state, cb, args = self.state, self.callbacks, self.args
        state.max_steps = self.max_steps
        start_step = state.global_step
        strategy, model, optimizer, scheduler = self.strategy, self.model, self.optimizer, self.lr_scheduler
        ga = self.gradient_accumulation_steps
        self.losses = LossTracker(strategy.device)
        self.total_loss = 0.0
        self._last_logged_step = state.global_step
        window, self._pending_loss_window = self._pending_loss_window, None
        if window is not None and int(window["since_step"]) <= state.global_step:
            self.losses.restore(window["sums"])  # the losses since the last log before the save
            self._last_logged_step = int(window["since_step"])
        check_each_step = self.nan_inf_policy != "warn"
        # a strategy whose engine clips and steps the scheduler itself (DeepSpeed) says so
        clip = (
            self.max_grad_norm is not None
            and self.max_grad_norm > 0
            and not getattr(strategy, "handles_clipping", False)
        )
        step_scheduler = (
            scheduler is not None
            and not self.is_plateau
            and not getattr(strategy, "handles_scheduler", False)
        )

        try:
            batches_per_epoch = len(self.train_dataloader)  # type: ignore[arg-type]
        except TypeError:
            batches_per_epoch = None
        steps_per_epoch = self.steps_per_epoch or (
            math.ceil(batches_per_epoch / ga) if batches_per_epoch else self.max_steps
        )
        num_epochs = (
            self.num_epochs if self.num_epochs is not None else math.ceil(self.max_steps / steps_per_epoch)
        )

        # Everything the step body needs is looked up once here, not per step.
        step_fn, add_loss, max_norm, max_steps = (
            self.step_fn,
            self.losses.add,
            self.max_grad_norm,
            self.max_steps,
        )
        on_step_begin, on_substep_end, on_step_end = cb.on_step_begin, cb.on_substep_end, cb.on_step_end
        # one micro-batch per step on one process (the common case): its weight is 1 and the
        # batches need no grouping (zip() makes the 1-tuples without a Python frame per batch)
        unit_windows = ga == 1 and strategy.world_size == 1
        # held for the run, so that autograd reuses them instead of rebuilding one per
        # parameter in every forward (a hand-written loop's previous graph does the same)
        accumulators = strategy.grad_accumulators(self.model)  # noqa: F841 - kept alive only
        self.control = cb.on_train_begin(args, state, self.control)
        while (
            self.epoch < num_epochs
            and state.global_step < max_steps
            and not self.control.should_training_stop
        ):
            iterator = self._start_epoch(batches_per_epoch)
            if self.epoch >= num_epochs:
                break
            model.train()  # once per epoch; the step function only checks the flag
            self.control = cb.on_epoch_begin(args, state, self.control)
            epoch_step = self.batches_in_epoch // ga
            ran_any = False
            for window in zip(iterator) if unit_windows else _windows(iterator, ga):
                ran_any = True
                scales = _UNIT_SCALE if unit_windows else self._loss_scales(window)
                last = len(window) - 1
                window_loss = [] if check_each_step else None
                for i, batch in enumerate(window):
                    if i == 0:
                        self.control = on_step_begin(args, state, self.control)
                    if i < last:
                        with strategy.no_backward_sync(model):
                            loss = step_fn(model, batch, scales[i])
                    else:
                        loss = step_fn(model, batch, scales[i])
                    if loss.dim():
                        loss = loss.mean()
                    add_loss(loss)
                    if check_each_step:
                        window_loss.append(loss)
                    if i < last:
                        self.control = on_substep_end(args, state, self.control)
                self.batches_in_epoch += last + 1
                apply_update = True
                if check_each_step:
                    window_total = torch.stack(window_loss).sum()
                    if strategy.world_size > 1:  # every process must take the same decision
                        window_total = strategy.reduce(window_total, "sum")
                    apply_update = self._check_nonfinite(window_total)
                if apply_update:
                    if clip:
                        strategy.clip_grad_norm(model, optimizer, max_norm)
                    stepped = strategy.optimizer_step(optimizer)
                    if stepped and step_scheduler:
                        scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                state.global_step += 1
                epoch_step += 1
                state.epoch = self.epoch + epoch_step / steps_per_epoch
                ctl = self.control = on_step_end(args, state, self.control)
                if state.global_step >= max_steps:
                    ctl.should_training_stop = True
                if self._stop_requested:
                    ctl.should_training_stop = True
                    ctl.should_save = ctl.should_save or self._stop_with_save
                if ctl.should_log or ctl.should_evaluate or ctl.should_save:
                    self._log_evaluate_save()
                    model.train()  # an evaluation (or a callback) may have left it in eval mode
                    ctl = self.control
                if ctl.should_epoch_stop or ctl.should_training_stop:
                    break
            if not ran_any:
                logger.warning(
                    "The training dataloader yielded no batch in epoch %d; stopping at step %d of %d.",
                    self.epoch,
                    state.global_step,
                    self.max_steps,
                )
                self.control.should_training_stop = True
            epoch_finished = not ran_any or not (
                self.control.should_training_stop
                and batches_per_epoch
                and self.batches_in_epoch < batches_per_epoch
            )
            self.control = cb.on_epoch_end(args, state, self.control)
            ctl = self.control
            if ctl.should_log or ctl.should_evaluate or ctl.should_save:
                self._log_evaluate_save()
            if epoch_finished:
                self.epoch += 1
                self.batches_in_epoch = 0
        # what was not logged yet still counts towards the run's mean loss
        filtered, raw, _ = self.losses.pop(strategy)
        self.total_loss += filtered if self.logging_nan_inf_filter else raw
        steps = max(state.global_step - start_step, 1)
        return self.total_loss / steps
