"""`WandbLogger`: metrics and config into a Weights & Biases run (online or offline)."""

from __future__ import annotations

import os
from typing import Any

from toolkit.loggers.base import Logger, require_package

__all__ = ["WandbLogger"]


class WandbLogger(Logger):
    """Logs to one W&B run per training (started on first use, finished by `finalize`).

    Calls the run object it owns (``run.log``, ``run.config``, ``run.finish``), not
    ``wandb.log``, so it does not depend on W&B's global current run. Offline mode needs
    no network and no account: pass ``mode="offline"`` or set ``WANDB_MODE=offline``;
    the run is then written under ``<save_dir>/wandb/offline-run-*`` and can be uploaded
    later with ``wandb sync``. Metric names are passed as they are; steps must not go
    backwards (W&B drops rows logged at a smaller step than one already logged).

    Args:
        project: W&B project; None lets W&B decide (``WANDB_PROJECT``, else its default).
        run_name: display name of the run.
        save_dir: folder under which W&B writes its ``wandb/`` folder (created if
            missing); None means W&B's default (``WANDB_DIR``, else the working directory).
        mode: ``"online"``, ``"offline"`` or ``"disabled"``; None lets W&B read
            ``WANDB_MODE``.
        **init_kwargs: more keyword arguments for ``wandb.init`` (``entity``, ``tags``,
            ``group``...).

    Raises:
        ImportError: when ``wandb`` is missing (``toolkit[wandb]``).
    """

    def __init__(
        self,
        project: str | None = None,
        run_name: str | None = None,
        save_dir: str | os.PathLike | None = None,
        mode: str | None = None,
        **init_kwargs: Any,
    ) -> None:
        require_package("wandb", "wandb", "WandbLogger")
        if mode is not None and mode not in ("online", "offline", "disabled"):
            raise ValueError(f"mode must be 'online', 'offline', 'disabled' or None, got {mode!r}")
        self.project = project
        self.run_name = run_name
        self.save_dir = os.fspath(save_dir) if save_dir is not None else None
        self.mode = mode
        self._init_kwargs = init_kwargs
        self._run: Any = None
        self._run_dir: str | None = None

    @property
    def name(self) -> str:
        return "wandb"

    @property
    def run(self) -> Any:
        """The W&B run (started on first access)."""
        if self._run is None:
            import wandb

            kwargs = dict(self._init_kwargs)
            if self.save_dir is not None:
                os.makedirs(self.save_dir, exist_ok=True)
                kwargs["dir"] = self.save_dir
            self._run = wandb.init(project=self.project, name=self.run_name, mode=self.mode, **kwargs)
            # run.dir is ``<run folder>/files``
            self._run_dir = os.path.dirname(os.path.normpath(self._run.dir))
        return self._run

    @property
    def run_dir(self) -> str | None:
        """Local folder of the current or last run (``.../wandb/<run>``); None before the first."""
        return self._run_dir

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        self.run.log(dict(metrics), step=int(step))

    def log_hyperparams(self, params: dict[str, Any]) -> None:
        self.run.config.update(dict(params), allow_val_change=True)

    def finalize(self, status: str = "success") -> None:
        if self._run is not None:
            self._run.finish(exit_code=0 if status == "success" else 1)
            self._run = None

    def __repr__(self) -> str:
        return f"WandbLogger(project={self.project!r}, run_name={self.run_name!r}, mode={self.mode!r})"
