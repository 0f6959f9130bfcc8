"""Backend names -> `SearchBackend` classes, and the choice of the default backend.

Adding a backend is one module and one line here.

Example:
    >>> [name for name in BACKENDS]
    ['optuna', 'ray']
    >>> get_backend("sigopt")
    Traceback (most recent call last):
    ...
    ValueError: backend='sigopt' is not a known hyperparameter-search backend; accepted: 'optuna', 'ray'
"""

from __future__ import annotations

from toolkit.search.base import SearchBackend
from toolkit.search.optuna_backend import OptunaBackend
from toolkit.search.ray_backend import RayBackend
from toolkit.types import ExplicitEnum

__all__ = ["BACKENDS", "HPSearchBackend", "get_backend", "default_backend", "available_backends"]


class HPSearchBackend(ExplicitEnum):
    """Names accepted by ``hyperparameter_search(backend=...)``."""

    OPTUNA = "optuna"
    RAY = "ray"


#: In order of preference: the first installed one is the default.
BACKENDS: dict[str, type[SearchBackend]] = {
    "optuna": OptunaBackend,
    "ray": RayBackend,
}


def available_backends() -> list[str]:
    """Names of the backends whose library is installed here."""
    return [name for name, cls in BACKENDS.items() if cls.is_available()]


def default_backend() -> SearchBackend:
    """The first installed backend (Optuna, then Ray Tune).

    Raises:
        ImportError: none is installed; names ``pip install "toolkit[optuna]"``.
    """
    for cls in BACKENDS.values():
        if cls.is_available():
            return cls()
    raise ImportError(
        "hyperparameter_search needs a search library and none is installed: install Optuna with "
        'pip install "toolkit[optuna]" (or Ray Tune with pip install "toolkit[ray]").'
    )


def get_backend(backend: str | HPSearchBackend | SearchBackend | None = None) -> SearchBackend:
    """The backend for ``backend=``: None picks the default; a name must be registered
    and installed; a `SearchBackend` instance is used as is.

    Raises:
        ValueError: an unknown name.
        ImportError: the named backend's library is not installed.
    """
    if isinstance(backend, SearchBackend):
        return backend
    if backend is None:
        return default_backend()
    name = backend.value if isinstance(backend, HPSearchBackend) else str(backend)
    cls = BACKENDS.get(name)
    if cls is None:
        accepted = ", ".join(repr(n) for n in BACKENDS)
        raise ValueError(f"backend={name!r} is not a known hyperparameter-search backend; accepted: {accepted}")
    instance = cls()
    instance.ensure_available()
    return instance
