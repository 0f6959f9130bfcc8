"""`SearchBackend`: the small interface every hyperparameter-search library is wrapped in.

A backend samples hyperparameters for a trial, reports intermediate objectives (so
that the library may stop a bad trial early), and drives the whole study. Everything
else (applying a trial to the arguments, the run folder, the objective) is shared and
lives in `toolkit.search.trial` and `toolkit.search.runner`.
"""

from __future__ import annotations

import abc
import importlib.util
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from toolkit.search.runner import SearchSession
    from toolkit.types import BestRun

__all__ = ["SearchBackend"]


class SearchBackend(abc.ABC):
    """One search library behind `Trainer.hyperparameter_search`.

    Class attributes:
        name: the ``backend=`` name.
        module: the module that must be importable.
        install: the command that installs it.
    """

    name: ClassVar[str]
    module: ClassVar[str]
    install: ClassVar[str]

    @classmethod
    def is_available(cls) -> bool:
        """True when the library can be imported here (checked without importing it)."""
        try:
            return importlib.util.find_spec(cls.module) is not None
        except (ImportError, ValueError):
            return False

    def ensure_available(self) -> None:
        """Raise a clear `ImportError` when the library is missing.

        Raises:
            ImportError: naming the command that installs the library.
        """
        if not self.is_available():
            raise ImportError(
                f"hyperparameter_search(backend={self.name!r}) needs the {self.module!r} package; "
                f"install it with: {self.install}"
            )

    @abc.abstractmethod
    def default_hp_space(self, trial: Any) -> dict[str, Any]:
        """The search space used when ``hp_space`` is not given."""

    def params(self, trial: Any, hp_space: Callable[[Any], Mapping[str, Any]]) -> dict[str, Any]:
        """The hyperparameters of ``trial`` (by default what ``hp_space(trial)`` returns)."""
        return dict(hp_space(trial))

    def trial_number(self, trial: Any) -> int | str | None:
        """The trial's id, used in its run folder name ``run-<id>``; None lets the
        caller choose the first free number."""
        number = getattr(trial, "number", None)
        return number if isinstance(number, (int, str)) else None

    def report(self, trial: Any, objective: float, step: int) -> None:
        """Report an intermediate objective at ``step``; may raise the library's
        "stop this trial" exception (pruning). The default does nothing."""
        return None

    @abc.abstractmethod
    def run(
        self, session: SearchSession, n_trials: int, directions: list[str], **kwargs: Any
    ) -> BestRun | list[BestRun]:
        """Run ``n_trials`` trials through ``session.run_trial`` and return the best run(s)."""
