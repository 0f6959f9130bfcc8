"""Pushing trained models to a model store: a folder at any fsspec URL, or a Hugging Face
Hub repository.

Three layers, each usable alone:

* `ModelStore`: where pushed files go. `FsspecModelStore` writes under a URL
  (``file://``, ``s3://``, ``memory://``, an absolute local path); `HubModelStore`
  commits to a Hub repository through ``huggingface_hub`` (optional: ``pip install
  "toolkit[hub]"``). `model_store` picks one from a ``hub_model_id``.
* `ModelPusher`: runs pushes on one background thread. `ModelPusher.push` copies what
  it is given (the same snapshot as `AsyncCheckpointIO`) and returns; a failure is
  raised by the next `push`, `wait` or `close`.
* `HubSync`: the Trainer glue: what to push after each checkpoint save
  (``hub_strategy``), and `HubSync.push_to_hub` for ``Trainer.push_to_hub``.

A checkpoint pushed to a store is a committed checkpoint folder (manifest written
last), so ``Trainer.train(resume_from_checkpoint="<store>/last-checkpoint")`` resumes
from it.

Example:
    >>> store = model_store("memory://hub-doc/model")
    >>> with ModelPusher(store) as pusher:
    ...     pusher.push({"weights.json": {"w": [1.0, 2.0]}, "README.md": b"# model"})
    ...     pusher.push(checkpoint={"model.safetensors": {}, "trainer_state.json": {"global_step": 2}},
    ...                 checkpoint_folder="last-checkpoint")
    'memory://hub-doc/model'
    'memory://hub-doc/model'
    >>> from toolkit.checkpoint import FsspecCheckpointIO, files
    >>> FsspecCheckpointIO().load("memory://hub-doc/model/last-checkpoint")["trainer_state.json"]
    {'global_step': 2}
    >>> files.remove("memory://hub-doc")
"""

from __future__ import annotations

import abc
import logging
import os
import re
import tempfile
import uuid
from collections.abc import Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import fsspec

from toolkit.checkpoint import MANIFEST_NAME, FsspecCheckpointIO, snapshot
from toolkit.checkpoint import files as storage
from toolkit.checkpoint.io import PARTIAL_MARKER, TEMP_INFIX
from toolkit.checkpoint.serialization import json_to_bytes, object_to_bytes, tensors_to_bytes
from toolkit.run_checkpoint import SAFE_WEIGHTS_NAME, TRAINING_ARGS_NAME, WEIGHTS_NAME
from toolkit.types import HubStrategy
from toolkit.utils.background import BackgroundWorker

if TYPE_CHECKING:
    from toolkit.trainer import Trainer

__all__ = [
    "ModelStore",
    "FsspecModelStore",
    "HubModelStore",
    "HubPushError",
    "ModelPusher",
    "HubSync",
    "model_store",
    "encode_files",
    "LAST_CHECKPOINT",
]

logger = logging.getLogger(__name__)

#: The store folder holding the newest checkpoint (``hub_strategy="checkpoint"``).
LAST_CHECKPOINT = "last-checkpoint"
_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_RUN_FOLDER = re.compile(r"^(checkpoint-\d+|run-.+|last-checkpoint)$")


class HubPushError(RuntimeError):
    """A push to a Hugging Face Hub repository could not be done (offline, no access...)."""


def encode_files(files: Mapping[str, Any]) -> dict[str, bytes]:
    """File name -> bytes, encoded by extension as in `CheckpointIO` (``.safetensors``:
    dict of tensors; ``.json``: JSON-able; ``.pt``/``.pth``/``.bin``: ``torch.save``-able;
    ``str``: UTF-8; ``bytes`` as is).

    Example:
        >>> encode_files({"a.json": {"x": 1}, "notes.txt": "hi"})["notes.txt"]
        b'hi'
    """
    out: dict[str, bytes] = {}
    for name, value in files.items():
        if isinstance(value, (bytes, bytearray, memoryview)):
            out[name] = bytes(value)
        elif isinstance(value, str):
            out[name] = value.encode("utf-8")
        elif name.endswith(".safetensors"):
            out[name] = tensors_to_bytes(value)
        elif name.endswith(".json"):
            out[name] = json_to_bytes(value)
        elif name.endswith((".pt", ".pth", ".bin")):
            out[name] = object_to_bytes(value)
        else:
            raise TypeError(f"{name!r}: cannot tell how to store a {type(value).__name__}; pass bytes")
    return out


# --------------------------------------------------------------------------- stores
class ModelStore(abc.ABC):
    """Where pushed models go.

    Attributes:
        url: where the store is, for messages and return values.
    """

    url: str

    def prepare(self) -> None:
        """Create or check the destination before the first push (default: nothing)."""
        return None

    def location(self, folder: str = "") -> str:
        """The URL of ``folder`` in the store."""
        return storage.join(self.url, folder) if folder else self.url

    @abc.abstractmethod
    def put_files(self, files: Mapping[str, bytes], folder: str = "", commit_message: str = "") -> None:
        """Write (replace) the files ``files`` (relative name -> bytes) under ``folder``."""

    @abc.abstractmethod
    def put_checkpoint(self, state: Mapping[str, Any], folder: str, commit_message: str = "") -> None:
        """Replace ``folder`` with a committed checkpoint of ``state`` (`CheckpointIO` format)."""


class FsspecModelStore(ModelStore):
    """A store at a local path or fsspec URL.

    Loose files are written one by one (each atomically on a local disk). A checkpoint
    folder is saved through `FsspecCheckpointIO`: locally beside the old one and swapped
    in by two renames; on object stores the old manifest goes first and the new one is
    written last, so a reader never takes a half-written folder for a checkpoint.

    Args:
        url: the store's root folder.
        storage_options: fsspec options (credentials, endpoint...).
    """

    def __init__(self, url: str | os.PathLike[str], storage_options: dict[str, Any] | None = None) -> None:
        self.url = os.fspath(url).rstrip("/") or os.fspath(url)
        self.storage_options = dict(storage_options or {})

    def prepare(self) -> None:
        """Create the root folder."""
        storage.makedirs(self.url, self.storage_options)

    def put_files(self, files: Mapping[str, bytes], folder: str = "", commit_message: str = "") -> None:
        """Write each file under ``<url>/<folder>``; sub-folders in names are created."""
        base = self.location(folder)
        storage.makedirs(base, self.storage_options)
        for name in sorted(files):
            parts = [p for p in name.split("/") if p]
            target = storage.join(base, *parts)
            if len(parts) > 1:
                storage.makedirs(storage.join(base, *parts[:-1]), self.storage_options)
            storage.write_bytes(target, files[name], self.storage_options)

    def put_checkpoint(self, state: Mapping[str, Any], folder: str, commit_message: str = "") -> None:
        """Replace ``<url>/<folder>`` with a committed checkpoint of ``state``."""
        state = {k: v for k, v in state.items() if k not in (MANIFEST_NAME, PARTIAL_MARKER)}
        target = self.location(folder)
        io = FsspecCheckpointIO(self.storage_options)
        fs, path = fsspec.core.url_to_fs(target, **self.storage_options)
        if not storage.is_local(target, self.storage_options):
            io.remove(target)
            io.save(state, target)
            return
        fs.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        tag = uuid.uuid4().hex
        fresh, old = f"{path}.push-{tag}", f"{path}.old-{tag}"
        io.save(state, fresh)
        if os.path.lexists(path):
            os.rename(path, old)
            os.rename(fresh, path)
            io.remove(old)
        else:
            os.rename(fresh, path)


def _hub_module() -> Any:
    try:
        import huggingface_hub
    except ImportError as exc:
        raise ImportError(
            'Pushing to a Hugging Face Hub repository needs huggingface_hub: pip install "toolkit[hub]". '
            "To push to a folder instead, set hub_model_id to a file://, s3:// or memory:// URL or an absolute path."
        ) from exc
    return huggingface_hub


def _hub_offline(hub: Any) -> bool:
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}
    return env or bool(getattr(getattr(hub, "constants", None), "HF_HUB_OFFLINE", False))


class HubModelStore(ModelStore):
    """A Hugging Face Hub model repository (created on first use when absent).

    Each `put_files` is one commit; `put_checkpoint` replaces the folder in one commit.

    Args:
        repo_id: ``"user/name"`` or ``"name"``.
        token: access token (default: the one ``huggingface-cli login`` saved).
        private: create the repository as private.
        api: an ``HfApi``-like object (default ``huggingface_hub.HfApi()``).

    Raises:
        ImportError: ``huggingface_hub`` is not installed.
    """

    def __init__(self, repo_id: str, token: str | None = None, private: bool = False, api: Any = None) -> None:
        self._hub = _hub_module()
        self.repo_id = repo_id
        self.token = token
        self.private = private
        self.url = f"https://huggingface.co/{repo_id}"
        self._api = api
        self._ready = False

    def _fail(self, what: str, exc: BaseException) -> HubPushError:
        return HubPushError(
            f"Could not {what} the Hugging Face Hub repository {self.repo_id!r}: {type(exc).__name__}: {exc}. "
            "Check the network and the token (hub_token, or `huggingface-cli login`), or set hub_model_id to a "
            "file://, s3:// or memory:// URL or an absolute path to push to a folder instead."
        )

    def prepare(self) -> None:
        """Check that the Hub can be reached and create the repository (``exist_ok``).

        Raises:
            HubPushError: offline mode (``HF_HUB_OFFLINE``), no network, no access.
        """
        if self._ready:
            return
        if _hub_offline(self._hub):
            raise HubPushError(
                f"Cannot push to the Hugging Face Hub repository {self.repo_id!r}: offline mode is on "
                "(HF_HUB_OFFLINE). Set hub_model_id to a file://, s3:// or memory:// URL or an absolute path to "
                "push to a folder instead."
            )
        if self._api is None:
            self._api = self._hub.HfApi()
        try:
            self._api.create_repo(self.repo_id, token=self.token, private=self.private, exist_ok=True)
        except Exception as exc:
            raise self._fail("create or reach", exc) from exc
        self._ready = True

    def put_files(self, files: Mapping[str, bytes], folder: str = "", commit_message: str = "") -> None:
        """Commit the files under ``folder``."""
        self.prepare()
        prefix = f"{folder.strip('/')}/" if folder.strip("/") else ""
        ops = [self._hub.CommitOperationAdd(path_in_repo=prefix + name, path_or_fileobj=bytes(data))
               for name, data in sorted(files.items())]
        try:
            self._api.create_commit(self.repo_id, ops, commit_message=commit_message or "Upload model",
                                    token=self.token)
        except Exception as exc:
            raise self._fail("push to", exc) from exc

    def put_checkpoint(self, state: Mapping[str, Any], folder: str, commit_message: str = "") -> None:
        """Replace ``folder`` with the checkpoint (files and manifest) in one commit."""
        self.prepare()
        state = {k: v for k, v in state.items() if k not in (MANIFEST_NAME, PARTIAL_MARKER)}
        with tempfile.TemporaryDirectory(prefix="toolkit-push-") as tmp:
            local = os.path.join(tmp, "checkpoint")
            FsspecCheckpointIO(fsync=False).save(state, local)
            try:
                self._api.upload_folder(
                    repo_id=self.repo_id, folder_path=local, path_in_repo=folder,
                    commit_message=commit_message or f"Upload {folder}", token=self.token, delete_patterns="*",
                )
            except Exception as exc:
                raise self._fail("push to", exc) from exc


def model_store(
    model_id: str | os.PathLike[str] | ModelStore, *, token: str | None = None, private: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> ModelStore:
    """The store a ``hub_model_id`` names: an fsspec URL (``file://``, ``s3://``,
    ``memory://`` ...) or an absolute local path gives `FsspecModelStore`; a repository
    id (``"user/name"``) gives `HubModelStore`.

    Raises:
        ValueError: ``model_id`` is neither.
        ImportError: a repository id while ``huggingface_hub`` is not installed.
    """
    if isinstance(model_id, ModelStore):
        return model_id
    text = os.fspath(model_id)
    if storage.is_url(text) or os.path.isabs(text):
        return FsspecModelStore(text, storage_options)
    if _REPO_ID.match(text):
        return HubModelStore(text, token=token, private=private)
    raise ValueError(
        f"hub_model_id={text!r} is neither a store URL (file://, s3://, memory://, or an absolute path) nor a "
        "Hugging Face Hub repository id ('user/name')"
    )


# --------------------------------------------------------------------------- pusher
class ModelPusher:
    """Pushes to a `ModelStore` on one background thread.

    Args:
        store: where to push.
    """

    def __init__(self, store: ModelStore) -> None:
        self.store = store
        self._worker = BackgroundWorker("toolkit-push")

    @property
    def busy(self) -> bool:
        """True while a push is queued or running."""
        return self._worker.pending > 0

    def _run(self, files: dict[str, Any] | None, folder: str, checkpoint: dict[str, Any] | None,
             checkpoint_folder: str | None, commit_message: str) -> str:
        try:
            if files:
                self.store.put_files(encode_files(files), folder, commit_message)
            if checkpoint is not None:
                self.store.put_checkpoint(checkpoint, checkpoint_folder or LAST_CHECKPOINT, commit_message)
            return self.store.location(folder)
        except BaseException as error:
            logger.error("push to %s failed: %s", self.store.url, error)
            raise

    def push(
        self, files: Mapping[str, Any] | None = None, *, folder: str = "", checkpoint: Mapping[str, Any] | None = None,
        checkpoint_folder: str | None = None, commit_message: str = "", blocking: bool = True,
        skip_if_busy: bool = False,
    ) -> Any:
        """Push ``files`` under ``folder`` and/or ``checkpoint`` as the folder
        ``checkpoint_folder`` (default ``last-checkpoint``), as one job.

        Everything is copied before this returns, so the caller may change it at once.

        Args:
            files: name -> content (bytes, str, or encoded by extension, see `encode_files`).
            folder: where the files go in the store.
            checkpoint: a checkpoint state (`CheckpointIO` format), or None.
            checkpoint_folder: the checkpoint's folder in the store.
            commit_message: message of the commit (Hub stores).
            blocking: wait for the push (and raise its error) before returning.
            skip_if_busy: do nothing (return None) while an earlier push is still running.

        Returns:
            The store URL of ``folder`` when blocking; else a `Future` of it (None when skipped).

        Raises:
            Exception: the failure of an earlier background push (this push is not started),
                or of this one when ``blocking``.
        """
        if self._worker.closed:
            raise RuntimeError("ModelPusher is closed")
        self._worker.raise_error()
        if skip_if_busy and self.busy:
            logger.info("A push to %s is still running; this one is skipped.", self.store.url)
            return None
        frozen_files = snapshot(dict(files)) if files else None
        frozen_checkpoint = snapshot(dict(checkpoint)) if checkpoint is not None else None
        future = self._worker.submit(
            self._run, frozen_files, folder, frozen_checkpoint, checkpoint_folder, commit_message
        )
        if not blocking:
            return future
        self.wait()
        return future.result()

    def wait(self) -> None:
        """Block until every queued push has finished.

        Raises:
            Exception: the first failure of a background push since the last report.
        """
        self._worker.wait()

    def close(self) -> None:
        """Wait for queued pushes and stop the thread; calling it again does nothing."""
        self._worker.close()

    def __enter__(self) -> ModelPusher:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is None:
            self.close()
            return
        try:
            self.close()
        except Exception as error:
            logger.error("background push failed during an error exit: %s", error)


# --------------------------------------------------------------------------- trainer glue
def _read_model_folder(output_dir: str) -> dict[str, bytes]:
    """The files of ``output_dir`` that make the model (everything but checkpoint, trial
    and temporary folders, and names starting with ``.`` or ``_``)."""
    fs, root = fsspec.core.url_to_fs(output_dir)
    root = root.rstrip("/")
    fs.invalidate_cache(root)
    out: dict[str, bytes] = {}
    if not fs.exists(root):
        return out
    for path in sorted(fs.find(root)):
        rel = path.rstrip("/")[len(root):].lstrip("/")
        parts = rel.split("/")
        if (_RUN_FOLDER.match(parts[0]) or any(p.startswith((".", "_")) for p in parts)
                or any(TEMP_INFIX in p or ".push-" in p or ".old-" in p for p in parts)):
            continue
        out[rel] = fs.cat_file(path)
    return out


def _default_model_id(output_dir: str) -> str:
    return os.path.basename(os.path.abspath(output_dir.rstrip("/"))) if not storage.is_url(output_dir) else (
        output_dir.rstrip("/").rsplit("/", 1)[-1]
    )


class HubSync:
    """Pushes a Trainer's model to ``hub_model_id`` following ``hub_strategy``.

    * ``"end"``: only `push_to_hub` (and ``save_model`` with ``push_to_hub=True``) push.
    * ``"every_save"``: after each checkpoint save, the weights, ``training_args.json``,
      the model config and the tokenizer files go to the store root, in the background.
      While a push runs, later saves are not pushed unless ``hub_always_push``.
    * ``"checkpoint"``: the same, plus the whole checkpoint as ``last-checkpoint``.
    * ``"all_checkpoints"``: the same, plus each checkpoint under its own name (these
      pushes are never skipped, so that every checkpoint reaches the store).

    Nothing is pushed during a hyperparameter search, nor from processes other than
    the main one.

    Args:
        trainer: the Trainer (duck-typed).
        store: the store (default: `model_store` of ``hub_model_id``, or of the last part
            of ``output_dir`` as a Hub repository name when it is unset).

    Raises:
        ValueError: the store is ``output_dir`` itself.
        ImportError, HubPushError: a Hub repository that cannot be used (checked at
            once when ``push_to_hub=True``).
    """

    def __init__(self, trainer: Trainer, store: ModelStore | None = None) -> None:
        self.trainer = trainer
        args = trainer.args
        self.auto = bool(args.push_to_hub)
        if store is None:
            store = model_store(args.hub_model_id or _default_model_id(args.output_dir),
                                token=args.hub_token, private=args.hub_private_repo)
        if isinstance(store, FsspecModelStore) and _same_place(store.url, args.output_dir):
            raise ValueError(
                f"hub_model_id={args.hub_model_id!r} is output_dir itself; push to another folder or URL."
            )
        self.store = store
        self.pusher = ModelPusher(store)
        self._static: dict[str, bytes] | None = None
        if self.auto and trainer.is_world_process_zero():
            store.prepare()

    def _static_files(self) -> dict[str, bytes]:
        """Config and tokenizer files (``save_pretrained``), read once."""
        if self._static is None:
            t = self.trainer
            model = t.strategy.unwrap(t.model_wrapped)
            savers = [getattr(model, "config", None), getattr(model, "generation_config", None), t.tokenizer]
            savers = [s for s in savers if callable(getattr(s, "save_pretrained", None))]
            self._static = {}
            if savers:
                with tempfile.TemporaryDirectory(prefix="toolkit-push-") as tmp:
                    for saver in savers:
                        saver.save_pretrained(tmp)
                    self._static = _read_model_folder(tmp)
        return self._static

    def checkpoint_saved(self, path: str, files: Mapping[str, Any]) -> None:
        """After ``checkpoint-<step>`` was saved with ``files``: push per ``hub_strategy``."""
        t = self.trainer
        args = t.args
        strategy = HubStrategy(args.hub_strategy)
        if not self.auto or strategy == HubStrategy.END or t.state.is_hyper_param_search:
            return
        if not t.is_world_process_zero():
            return
        model_files = {n: files[n] for n in (SAFE_WEIGHTS_NAME, WEIGHTS_NAME, TRAINING_ARGS_NAME) if n in files}
        model_files.update(self._static_files())
        checkpoint, folder = None, None
        if strategy == HubStrategy.CHECKPOINT:
            checkpoint, folder = files, LAST_CHECKPOINT
        elif strategy == HubStrategy.ALL_CHECKPOINTS:
            checkpoint, folder = files, path.rstrip("/").rsplit("/", 1)[-1]
        self.pusher.push(
            model_files, checkpoint=checkpoint, checkpoint_folder=folder,
            commit_message=f"Training in progress, step {t.state.global_step}", blocking=False,
            skip_if_busy=not args.hub_always_push and strategy != HubStrategy.ALL_CHECKPOINTS,
        )

    def push_to_hub(self, commit_message: str | None = "End of training", blocking: bool = True, **kwargs: Any) -> Any:
        """Save the model into ``output_dir``, write the model card, and push the folder
        (without checkpoints) to the store; see `Trainer.push_to_hub`."""
        t = self.trainer
        t.save_model(_internal_call=True)
        if not t.is_world_process_zero():
            return None
        t.create_model_card(**kwargs)
        self.pusher.wait()
        self.store.prepare()
        files = _read_model_folder(t.args.output_dir)
        return self.pusher.push(files, commit_message=commit_message or "End of training", blocking=blocking)

    def wait(self) -> None:
        """Wait for the pushes in flight; raise the first failure."""
        self.pusher.wait()


def _same_place(a: str, b: str) -> bool:
    try:
        fs_a, path_a = fsspec.core.url_to_fs(a)
        fs_b, path_b = fsspec.core.url_to_fs(b)
    except (ValueError, ImportError):
        return False
    if type(fs_a) is not type(fs_b):
        return False
    if storage.is_local(a):
        return os.path.realpath(path_a) == os.path.realpath(path_b)
    return path_a.rstrip("/") == path_b.rstrip("/")
