"""The `Logger` sink interface and the `LoggerCollection` that feeds several sinks.

A logger is a sink: it writes what it is given at the step it is given. Everything that
is the same for every sink lives once, in `LoggerCollection`:

- rank-zero filtering: a collection built with ``is_global_zero=False`` does nothing
  (no value conversion, no file, no import);
- the step: callers pass the optimizer step explicitly, sinks never count;
- value cleaning: tensors and numpy scalars become ``float``, non-numeric values are
  dropped with one warning per key.

Example:
    >>> import torch
    >>> class ListLogger(Logger):
    ...     def __init__(self):
    ...         self.rows = []
    ...     @property
    ...     def name(self):
    ...         return "list"
    ...     def log_metrics(self, metrics, step):
    ...         self.rows.append((step, metrics))
    >>> sink = ListLogger()
    >>> loggers = LoggerCollection([sink])
    >>> loggers.log_metrics({"loss": torch.tensor(0.5), "note": "text"}, step=10)
    {'loss': 0.5}
    >>> sink.rows
    [(10, {'loss': 0.5})]
    >>> LoggerCollection([sink], is_global_zero=False).log_metrics({"loss": 1.0}, step=11)
    {}
    >>> len(sink.rows)
    1
"""

from __future__ import annotations

import importlib.util
import logging
import numbers
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

__all__ = [
    "Logger",
    "LoggerCollection",
    "to_float",
    "clean_metrics",
    "flatten_params",
    "require_package",
]

log = logging.getLogger(__name__)


def require_package(module: str, extra: str, what: str) -> None:
    """Raise a clear `ImportError` when ``module`` is not installed (without importing it).

    Args:
        module: top-level module to look for, e.g. ``"mlflow"``.
        extra: the toolkit extra that installs it, e.g. ``"mlflow"``.
        what: the class or feature that needs it (for the message).

    Raises:
        ImportError: naming the extra, e.g. ``pip install "toolkit[mlflow]"``.

    Example:
        >>> require_package("json", "none", "JSON")  # installed: nothing happens
        >>> require_package("surely_not_a_module_xyz", "xyz", "XYZLogger")
        Traceback (most recent call last):
        ...
        ImportError: XYZLogger needs the 'surely_not_a_module_xyz' package: pip install "toolkit[xyz]"
    """
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a broken or half-installed package
        found = False
    if not found:
        raise ImportError(f'{what} needs the {module!r} package: pip install "toolkit[{extra}]"')


def to_float(value: Any) -> float | None:
    """``value`` as a Python float, or None when it is not a single number.

    Accepts ints, floats, bools, one-element tensors and numpy scalars / one-element
    arrays. Strings, None, lists and multi-element tensors give None. NaN and inf are
    kept (they are numbers); complex values give None.

    Example:
        >>> import numpy as np, torch
        >>> to_float(3), to_float(np.float32(0.5)), to_float(torch.tensor([2.0])), to_float(True)
        (3.0, 0.5, 2.0, 1.0)
        >>> to_float("0.5") is None, to_float(torch.ones(2)) is None, to_float(None) is None
        (True, True, True)
    """
    if isinstance(value, numbers.Real):  # int, float, bool, numpy real scalars
        return float(value)
    if isinstance(value, (str, bytes)) or value is None:
        return None
    numel = getattr(value, "numel", None) or getattr(value, "size", None)
    item = getattr(value, "item", None)
    if item is None:
        return None
    try:
        size = numel() if callable(numel) else numel
        if size != 1:
            return None
        out = item()
    except (TypeError, ValueError, RuntimeError):
        return None
    return float(out) if isinstance(out, numbers.Real) else None


def clean_metrics(metrics: Mapping[str, Any], warned: set[str] | None = None) -> dict[str, float]:
    """Keep the numeric entries of ``metrics`` as floats; warn once per dropped key.

    Args:
        metrics: name -> value, as a loop or callback produced it.
        warned: keys already warned about (updated in place); None warns every time.

    Returns:
        A new dict of ``str`` keys and ``float`` values, in the original order.

    Example:
        >>> clean_metrics({"loss": 1, "lr": 0.1, "tag": "x", "hist": [1, 2]})
        {'loss': 1.0, 'lr': 0.1}
    """
    out: dict[str, float] = {}
    for key, value in metrics.items():
        number = to_float(value)
        if number is None:
            if warned is None or key not in warned:
                log.warning(
                    "Dropped the logged value for %r: loggers take numbers, got %s.",
                    key,
                    type(value).__name__,
                )
                if warned is not None:
                    warned.add(key)
            continue
        out[str(key)] = number
    return out


def flatten_params(params: Mapping[str, Any], sep: str = "/", prefix: str = "") -> dict[str, Any]:
    """Flatten nested mappings into one level: ``{"a": {"b": 1}}`` -> ``{"a/b": 1}``.

    Example:
        >>> flatten_params({"lr": 0.1, "model": {"hidden": 8, "act": "gelu"}})
        {'lr': 0.1, 'model/hidden': 8, 'model/act': 'gelu'}
    """
    out: dict[str, Any] = {}
    for key, value in params.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            out.update(flatten_params(value, sep=sep, prefix=name))
        else:
            out[name] = value
    return out


class Logger(ABC):
    """A metrics sink: writes what it is given, at the step it is given.

    Subclasses implement `name` and `log_metrics`; `log_hyperparams` and `finalize`
    default to doing nothing. Sinks open their file / run lazily on first use and
    `finalize` closes it, so a finalized logger can be used again (a new run starts).
    Sinks trust their caller: values are already floats and the caller is the
    global-zero process (see `LoggerCollection`).
    """

    @property
    @abstractmethod
    def name(self) -> str:
        """Short name of the sink (the ``report_to`` name for built-in ones)."""

    @abstractmethod
    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Write ``metrics`` (name -> float) at optimizer step ``step``."""

    def log_hyperparams(self, params: dict[str, Any]) -> None:  # noqa: B027 - optional hook
        """Record the run's hyper-parameters (arguments, model config). Default: ignore."""

    def finalize(self, status: str = "success") -> None:  # noqa: B027 - optional hook
        """Flush and close; ``status`` is ``"success"``, ``"failed"`` or ``"interrupted"``."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class LoggerCollection:
    """Several loggers behind one interface; owns rank-zero filtering and value cleaning.

    Args:
        loggers: the sinks, in the order they are written to.
        is_global_zero: whether this process is the global rank-zero process; when
            False every method returns at once and no sink is touched.

    Attributes:
        is_global_zero: may be updated later (the Trainer bridge copies
            ``state.is_world_process_zero`` into it).

    Example:
        >>> from toolkit.loggers import CSVLogger
        >>> loggers = LoggerCollection([CSVLogger("runs/doc")])
        >>> loggers.log_hyperparams({"lr": 0.1})
        >>> loggers.log_metrics({"loss": 0.25}, step=1)
        {'loss': 0.25}
        >>> loggers.finalize()
        >>> [lg.name for lg in loggers]
        ['csv']
    """

    def __init__(self, loggers: Iterable[Logger] = (), *, is_global_zero: bool = True) -> None:
        self.loggers: list[Logger] = []
        self.is_global_zero = bool(is_global_zero)
        self._warned: set[str] = set()
        for lg in loggers:
            self.add(lg)

    def add(self, logger: Logger) -> None:
        """Append a sink.

        Raises:
            TypeError: if ``logger`` is not a `Logger`.
        """
        if not isinstance(logger, Logger):
            raise TypeError(f"loggers must be toolkit.loggers.Logger instances, got {type(logger).__name__}")
        self.loggers.append(logger)

    def __iter__(self) -> Iterator[Logger]:
        return iter(self.loggers)

    def __len__(self) -> int:
        return len(self.loggers)

    @property
    def active(self) -> bool:
        """True when a call would reach at least one sink (rank zero and not empty)."""
        return self.is_global_zero and bool(self.loggers)

    def log_metrics(self, metrics: Mapping[str, Any], step: int) -> dict[str, float]:
        """Clean ``metrics`` and write them to every sink at ``step``.

        Args:
            metrics: name -> value; tensors and numpy scalars are converted, other
                non-numeric values are dropped (one warning per key).
            step: the optimizer step (``state.global_step`` in a Trainer).

        Returns:
            What was written (empty when inactive or nothing numeric was left).

        Raises:
            TypeError: if ``step`` is not an int.
        """
        if not self.active:
            return {}
        if isinstance(step, bool) or not isinstance(step, numbers.Integral):
            raise TypeError(f"step must be an int (the optimizer step), got {step!r}")
        clean = clean_metrics(metrics, self._warned)
        if clean:
            for lg in self.loggers:
                lg.log_metrics(dict(clean), int(step))
        return clean

    def log_hyperparams(self, params: Mapping[str, Any]) -> None:
        """Hand ``params`` (a plain, possibly nested dict) to every sink."""
        if not self.active:
            return
        params = dict(params)
        for lg in self.loggers:
            lg.log_hyperparams(params)

    def finalize(self, status: str = "success") -> None:
        """Finalize every sink; one sink failing does not keep the others open.

        Raises:
            Exception: the first error raised by a sink, after all were finalized.
        """
        if not self.active:
            return
        error: BaseException | None = None
        for lg in self.loggers:
            try:
                lg.finalize(status)
            except Exception as exc:  # finalize the others before re-raising
                log.error("Finalizing %s failed: %s", lg.name, exc)
                error = error or exc
        if error is not None:
            raise error

    def __repr__(self) -> str:
        return f"LoggerCollection({self.loggers!r}, is_global_zero={self.is_global_zero})"
