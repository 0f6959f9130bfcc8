"""Encoding and decoding of checkpoint files: safetensors, safe pickles and JSON.

This module knows how to turn one value into bytes and back; it knows nothing about
folders, manifests or storage back ends (that is `toolkit.checkpoint.io`).

* Tensors go to ``safetensors``. Tensors that share memory (tied input/output
  embeddings, for instance) are refused by plain ``safetensors``; `save_tensors` writes
  each shared tensor once and records the other names as aliases in the file metadata
  under `TIED_METADATA_KEY`, and `load_tensors` gives every name back, the aliases
  being the very same tensor object as the name they point to.
* Other objects go through ``torch.save`` and come back through ``torch.load`` with
  ``weights_only=True``: a pickle that would import and call arbitrary code is refused
  with `UnsafeCheckpointError` instead of being run.
* JSON is written sorted and indented, like the Hugging Face ``trainer_state.json``.

The checkpoint error types live here, at the bottom of the package, so that every
layer can raise them.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import pickle
import struct
import types
from collections.abc import Iterator, Mapping
from typing import IO, Any, Union

import safetensors.torch
import torch

__all__ = [
    "TIED_METADATA_KEY",
    "CheckpointError",
    "CheckpointCorruptedError",
    "CheckpointWriteError",
    "UnsafeCheckpointError",
    "MapLocation",
    "tensors_to_bytes",
    "tensors_from_bytes",
    "write_tensors",
    "save_tensors",
    "load_tensors",
    "read_tensors_metadata",
    "object_to_bytes",
    "object_from_bytes",
    "write_object",
    "save_object",
    "load_object",
    "json_to_bytes",
    "json_from_bytes",
    "save_json",
    "load_json",
]

#: Metadata key under which `save_tensors` records tied names: JSON ``{alias: kept_name}``.
TIED_METADATA_KEY = "toolkit.tied"

#: Where loaded tensors go: a device string (``"cpu"``, ``"cuda:0"``), a device, or None (CPU).
MapLocation = Union[str, torch.device, None]

PathOrFile = Union[str, "os.PathLike[str]", IO[bytes]]


class CheckpointError(RuntimeError):
    """Base class of every checkpoint error raised by `toolkit.checkpoint`."""


class UnsafeCheckpointError(CheckpointError):
    """A pickled file asks to import or call something outside the weights-only allow-list.

    Loading it with plain ``pickle`` could run arbitrary code, so it is refused.
    """


class CheckpointCorruptedError(CheckpointError):
    """A checkpoint is incomplete or damaged: no manifest, a missing, short or altered file."""


class CheckpointWriteError(CheckpointError, OSError):
    """Writing a checkpoint failed (disk full, read-only storage, ...).

    Also an `OSError`, so code that already catches storage errors keeps working. The
    partial write has been removed and earlier checkpoints are untouched.
    """


# --------------------------------------------------------------------------- tensors


def _describe(target: Any) -> str:
    if isinstance(target, (str, os.PathLike)):
        return os.fspath(target)
    return str(getattr(target, "name", None) or type(target).__name__)


def _view_key(t: torch.Tensor) -> tuple[Any, ...]:
    return (t.dtype, tuple(t.shape), tuple(t.stride()), t.storage_offset())


def _dedupe_shared(tensors: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Split ``tensors`` into what to write and the aliases to record.

    Names whose tensors are the same view of the same memory become aliases of the
    first such name (in the mapping's order). Tensors that overlap in memory without
    being the same view are copied apart, so each is written with its own values.
    Non-contiguous tensors are made contiguous.
    """
    for name, value in tensors.items():
        if not isinstance(name, str):
            raise TypeError(f"tensor names must be str, got {name!r} ({type(name).__name__})")
        if not isinstance(value, torch.Tensor):
            raise TypeError(
                f"safetensors only stores tensors, but {name!r} is a {type(value).__name__}; "
                "put other objects in a '.pt' or '.json' file"
            )
    by_storage: dict[tuple[Any, int], list[str]] = {}
    for name, t in tensors.items():
        if t.device.type == "meta" or t.numel() == 0:
            continue
        by_storage.setdefault((t.device, t.untyped_storage().data_ptr()), []).append(name)

    aliases: dict[str, str] = {}
    must_copy: set[str] = set()
    for names in by_storage.values():
        if len(names) < 2:
            continue
        kept_by_view: dict[tuple[Any, ...], str] = {}
        for name in names:
            key = _view_key(tensors[name])
            if key in kept_by_view:
                aliases[name] = kept_by_view[key]
            else:
                kept_by_view[key] = name
        if len(kept_by_view) > 1:  # overlapping but different views: write each on its own
            must_copy.update(kept_by_view.values())

    out: dict[str, torch.Tensor] = {}
    for name, t in tensors.items():
        if name in aliases:
            continue
        t = t.detach()
        if name in must_copy:
            t = t.clone(memory_format=torch.contiguous_format)
        elif not t.is_contiguous():
            t = t.contiguous()
        out[name] = t
    return out, aliases


def _full_metadata(metadata: Mapping[str, str] | None, aliases: Mapping[str, str]) -> dict[str, str]:
    meta: dict[str, str] = {"format": "pt"}
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(f"safetensors metadata must map str to str, got {key!r}: {value!r}")
        meta[key] = value
    if TIED_METADATA_KEY in meta:
        raise ValueError(f"metadata key {TIED_METADATA_KEY!r} is reserved for tied-weight aliases")
    if aliases:
        meta[TIED_METADATA_KEY] = json.dumps(dict(aliases), sort_keys=True)
    return meta


def tensors_to_bytes(tensors: Mapping[str, torch.Tensor], metadata: Mapping[str, str] | None = None) -> bytes:
    """Encode a dict of tensors as safetensors bytes, handling shared memory.

    Args:
        tensors: Name to tensor. Tied tensors (same memory, same view) are stored once.
        metadata: Extra str-to-str metadata for the file header.

    Returns:
        The bytes of a ``.safetensors`` file.

    Raises:
        TypeError: A value is not a tensor, or metadata is not str to str.
    """
    unique, aliases = _dedupe_shared(tensors)
    return safetensors.torch.save(unique, metadata=_full_metadata(metadata, aliases))


# safetensors dtype names, in the order of the Rust library's ``Dtype`` enum: its writer
# puts wider types first (so every tensor is aligned), then sorts by name.
_SAFETENSORS_DTYPES: dict[torch.dtype, str] = {
    dtype: code
    for code, dtype in (
        ("BOOL", torch.bool),
        ("U8", torch.uint8),
        ("I8", torch.int8),
        ("I16", torch.int16),
        ("U16", getattr(torch, "uint16", None)),
        ("F16", torch.float16),
        ("BF16", torch.bfloat16),
        ("I32", torch.int32),
        ("U32", getattr(torch, "uint32", None)),
        ("F32", torch.float32),
        ("F64", torch.float64),
        ("I64", torch.int64),
        ("U64", getattr(torch, "uint64", None)),
    )
    if dtype is not None
}
_DTYPE_RANK = {code: rank for rank, code in enumerate(_SAFETENSORS_DTYPES.values())}


def _tensor_bytes(t: torch.Tensor) -> Any:
    """A zero-copy uint8 view of a contiguous CPU tensor's memory (a numpy array)."""
    return t.reshape(-1).view(torch.uint8).numpy()


def write_tensors(
    tensors: Mapping[str, torch.Tensor], f: IO[bytes], metadata: Mapping[str, str] | None = None
) -> None:
    """Stream a dict of tensors to ``f`` in the safetensors format, without building the file in memory.

    The header is written first, then each tensor's memory straight from the tensor
    (one tensor at a time is copied to CPU when it lives on another device). The bytes
    are those ``safetensors.torch.save`` would produce. Tied tensors are handled as in
    `tensors_to_bytes`; dtypes this writer does not know fall back to the safetensors
    encoder (one copy in memory).

    Args:
        tensors: Name to tensor.
        f: A binary file object open for writing (only ``write`` is used).
        metadata: Extra str-to-str metadata for the file header.

    Raises:
        TypeError: A value is not a tensor, or metadata is not str to str.
    """
    unique, aliases = _dedupe_shared(tensors)
    meta = _full_metadata(metadata, aliases)
    if any(t.dtype not in _SAFETENSORS_DTYPES or t.layout != torch.strided for t in unique.values()):
        f.write(safetensors.torch.save(unique, metadata=meta))
        return
    order = sorted(unique, key=lambda name: (-_DTYPE_RANK[_SAFETENSORS_DTYPES[unique[name].dtype]], name))
    header: dict[str, Any] = {"__metadata__": meta}
    offset = 0
    for name in order:
        t = unique[name]
        end = offset + t.numel() * t.element_size()
        header[name] = {
            "dtype": _SAFETENSORS_DTYPES[t.dtype],
            "shape": list(t.shape),
            "data_offsets": [offset, end],
        }
        offset = end
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned
    f.write(struct.pack("<Q", len(raw)))
    f.write(raw)
    for name in order:
        t = unique[name]
        if t.numel() == 0:
            continue
        f.write(_tensor_bytes(t if t.device.type == "cpu" else t.cpu()))


def save_tensors(
    tensors: Mapping[str, torch.Tensor],
    target: PathOrFile,
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write a dict of tensors as a safetensors file, handling tied (shared) tensors.

    Args:
        tensors: Name to tensor; see `tensors_to_bytes`.
        target: A local path or a binary file object open for writing (streamed to, see
            `write_tensors`).
        metadata: Extra str-to-str metadata for the file header.

    Raises:
        TypeError: A value is not a tensor, or metadata is not str to str.
    """
    if isinstance(target, (str, os.PathLike)):
        unique, aliases = _dedupe_shared(tensors)
        safetensors.torch.save_file(unique, os.fspath(target), metadata=_full_metadata(metadata, aliases))
    else:
        write_tensors(tensors, target, metadata)


def _header_metadata(data: bytes, source: str) -> dict[str, str]:
    if len(data) < 8:
        raise ValueError(f"{source}: too short to be a safetensors file")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise ValueError(f"{source}: safetensors header is longer than the file")
    header = json.loads(data[8 : 8 + header_len])
    return dict(header.get("__metadata__") or {})


def _apply_aliases(
    loaded: dict[str, torch.Tensor], metadata: Mapping[str, str], source: str, map_location: MapLocation
) -> dict[str, torch.Tensor]:
    if map_location is not None:
        loaded = {name: t.to(map_location) for name, t in loaded.items()}
    raw = metadata.get(TIED_METADATA_KEY)
    if not raw:
        return loaded
    aliases = json.loads(raw)
    for alias, kept in aliases.items():
        if kept not in loaded:
            raise ValueError(f"{source}: tied name {alias!r} points to {kept!r}, which is not in the file")
        loaded[alias] = loaded[kept]
    return loaded


def tensors_from_bytes(
    data: bytes, map_location: MapLocation = None, *, name: str = "<bytes>"
) -> dict[str, torch.Tensor]:
    """Decode safetensors bytes written by `tensors_to_bytes` (or any safetensors writer).

    Args:
        data: The file's bytes.
        map_location: Device to move the tensors to; None keeps them on CPU.
        name: File name used in error messages.

    Returns:
        Every stored name, tied aliases included (an alias is the same tensor object as
        the name it points to).

    Raises:
        ValueError: The bytes are not a valid safetensors file.
    """
    metadata = _header_metadata(data, name)
    try:
        loaded = safetensors.torch.load(data)
    except Exception as exc:  # safetensors raises its own error type
        raise ValueError(f"{name}: not a valid safetensors file ({exc})") from exc
    return _apply_aliases(loaded, metadata, name, map_location)


def load_tensors(source: PathOrFile | bytes, map_location: MapLocation = None) -> dict[str, torch.Tensor]:
    """Read a safetensors file, restoring tied aliases recorded by `save_tensors`.

    Args:
        source: A local path, a binary file object open for reading, or the raw bytes.
        map_location: Device to move the tensors to; None keeps them on CPU.

    Returns:
        Name to tensor, aliases included (an alias is the same tensor object as its target).

    Raises:
        ValueError: The file is not a valid safetensors file.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return tensors_from_bytes(bytes(source), map_location)
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        with safetensors.safe_open(path, framework="pt") as f:
            metadata = dict(f.metadata() or {})
            loaded = {key: f.get_tensor(key) for key in f.keys()}
        return _apply_aliases(loaded, metadata, path, map_location)
    return tensors_from_bytes(source.read(), map_location, name=_describe(source))


def read_tensors_metadata(data: bytes) -> dict[str, str]:
    """Return the str-to-str metadata of safetensors bytes without decoding the tensors.

    Args:
        data: The file's bytes (the header alone is enough).

    Returns:
        The ``__metadata__`` mapping of the header (empty when there is none).
    """
    return _header_metadata(data, "<bytes>")


# --------------------------------------------------------------------------- pickles


def object_to_bytes(obj: Any) -> bytes:
    """Serialise ``obj`` with ``torch.save`` and return the bytes.

    Args:
        obj: Anything ``torch.save`` accepts (state dicts, tensors, plain containers).

    Returns:
        The bytes of a ``torch.save`` archive.
    """
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


@contextlib.contextmanager
def _zip_crc(enabled: bool) -> Iterator[None]:
    """Switch ``torch.save``'s per-record CRC-32 for the duration (where torch has the option)."""
    get = getattr(torch.serialization, "get_crc32_options", None)
    set_ = getattr(torch.serialization, "set_crc32_options", None)
    if get is None or set_ is None or get() == enabled:
        yield
        return
    set_(enabled)
    try:
        yield
    finally:
        set_(not enabled)


def write_object(obj: Any, f: IO[bytes], *, record_checksums: bool = True) -> None:
    """Stream ``obj`` into ``f`` with ``torch.save`` (no copy of the archive in memory).

    Args:
        obj: Anything ``torch.save`` accepts.
        f: A binary file object with ``write`` and ``flush``.
        record_checksums: Let ``torch.save`` compute the zip CRC-32 of every record
            (as torch's own setting says).
            Pass False when the caller checksums the whole file itself (a checkpoint's
            manifest does): the archive still loads with ``torch.load``, but zip tools
            then see zero CRCs. The switch is torch's process-wide option, set only
            while this call runs.
    """
    with contextlib.nullcontext() if record_checksums else _zip_crc(False):
        torch.save(obj, f)


def save_object(obj: Any, f: PathOrFile) -> None:
    """Write ``obj`` with ``torch.save``.

    Args:
        obj: Anything ``torch.save`` accepts.
        f: A local path or a binary file object open for writing.
    """
    torch.save(obj, f)


#: Archives smaller than this are read, not mapped, by `load_object` (mapping costs more).
_MMAP_MIN_BYTES = 1 << 20


class _RefusedGlobal(pickle.UnpicklingError):
    """A global outside the allow-list: the caller falls back to torch's own loader."""


#: Python 2 module names that a protocol-2 pickle may use (``pickle`` maps them too).
_PY2_MODULES = {"__builtin__": "builtins", "copy_reg": "copyreg"}


def _allow_list_pickle_module() -> types.ModuleType | None:
    """A ``pickle_module`` for ``torch.load`` whose C unpickler resolves only allowed globals.

    The allowed globals are exactly those of torch's weights-only loader: its built-in
    list plus whatever the caller allowed with ``torch.serialization.safe_globals``
    (the blocked modules stay blocked). Every callable a pickle can reach comes from a
    global, so such a pickle can run nothing the weights-only loader would not; it is
    decoded by Python's C unpickler instead of torch's Python one, which is 2-6x
    faster on the small pickles of a checkpoint (an optimizer's step counts, the
    625-integer Python RNG state). None when torch does not expose its list, or when
    ``TORCH_FORCE_WEIGHTS_ONLY_LOAD`` asks for torch's loader.
    """
    if os.getenv("TORCH_FORCE_WEIGHTS_ONLY_LOAD", "0").lower() in ("1", "y", "yes", "true"):
        return None
    try:
        from torch import _weights_only_unpickler as weights_only

        allowed = dict(weights_only._get_allowed_globals())
        allowed.update(weights_only._get_user_allowed_globals())
        blocked = frozenset(weights_only._blocklisted_modules)
    except (ImportError, AttributeError, TypeError, ValueError):
        return None

    class AllowListUnpickler(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            module = _PY2_MODULES.get(module, module)
            found = None if module in blocked else allowed.get(f"{module}.{name}")
            if found is None:
                raise _RefusedGlobal(f"{module}.{name}")
            return found

    def load(file: IO[bytes], **kwargs: Any) -> Any:
        return AllowListUnpickler(file, **kwargs).load()

    shim = types.ModuleType("toolkit.checkpoint.allow_list_pickle")
    shim.Unpickler = AllowListUnpickler  # type: ignore[attr-defined]
    shim.load = load  # type: ignore[attr-defined]
    shim.UnpicklingError = pickle.UnpicklingError  # type: ignore[attr-defined]
    return shim


def _is_plain_archive(f: PathOrFile) -> bool:
    """True for a ``torch.save`` zip archive that is not TorchScript (``torch.load``
    hands TorchScript archives to ``torch.jit.load`` unless weights-only)."""
    try:
        if isinstance(f, (str, os.PathLike)):
            if not _is_zip(f):
                return False
            reader = torch._C.PyTorchFileReader(os.fspath(f))
        else:
            start = f.tell()
            if f.read(4) != b"PK\x03\x04":
                f.seek(start)
                return False
            f.seek(start)
            reader = torch._C.PyTorchFileReader(f)
            f.seek(start)
        return "constants.pkl" not in reader.get_all_records()
    except (OSError, RuntimeError, AttributeError, ValueError):
        return False


def load_object(
    f: PathOrFile, map_location: Any = None, *, name: str | None = None, mmap: bool = False
) -> Any:
    """Read an object written by `save_object`, refusing pickles that would run code.

    Accepts what ``torch.load(..., weights_only=True)`` accepts: tensors, numbers,
    strings, plain containers, and any type allowed with
    ``torch.serialization.safe_globals([...])`` around the call. Archives whose globals
    are all on that list are decoded by Python's C unpickler restricted to it (the
    same guarantee, a fraction of the time); anything else goes through torch's
    weights-only loader, which decides.

    Args:
        f: A local path or a binary file object open for reading (seekable).
        map_location: As for ``torch.load`` (device, string, dict or callable).
        name: File name for error messages (defaults to the path or the file's name).
        mmap: For a local path written by ``torch.save`` (zip format): map the file
            instead of reading it, so tensors are backed by the file's pages (private,
            copy-on-write) and nothing is copied up front. Ignored otherwise, and for
            files under 1 MiB (mapping costs more than reading those).

    Returns:
        The loaded object.

    Raises:
        UnsafeCheckpointError: The pickle references a global outside the allow-list.
    """
    label = name or _describe(f)
    is_path = isinstance(f, (str, os.PathLike))
    start = None if is_path else f.tell()
    mmap = mmap and is_path and os.path.getsize(f) >= _MMAP_MIN_BYTES
    shim = _allow_list_pickle_module()
    if shim is not None and _is_plain_archive(f):
        try:
            return torch.load(
                f,
                map_location=map_location,
                weights_only=False,
                pickle_module=shim,
                mmap=mmap,
            )
        except _RefusedGlobal:
            if start is not None:
                f.seek(start)  # type: ignore[union-attr]
    try:
        if mmap and _is_zip(f):
            return torch.load(f, map_location=map_location, weights_only=True, mmap=True)
        return torch.load(f, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        raise UnsafeCheckpointError(
            f"refusing to load {label!r}: it is a pickle that asks for objects outside the "
            "weights-only allow-list, and unpickling it could run arbitrary code. If you trust "
            "the file, allow the needed types with torch.serialization.safe_globals(...) or load "
            f"it yourself with torch.load(weights_only=False). Details: {exc}"
        ) from exc


def _is_zip(path: str | os.PathLike[str]) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def object_from_bytes(data: bytes, map_location: Any = None, *, name: str = "<bytes>") -> Any:
    """Decode bytes written by `object_to_bytes`; see `load_object`.

    Args:
        data: The archive's bytes.
        map_location: As for ``torch.load``.
        name: File name for error messages.

    Returns:
        The loaded object.

    Raises:
        UnsafeCheckpointError: The pickle references a global outside the allow-list.
    """
    return load_object(io.BytesIO(data), map_location, name=name)


# --------------------------------------------------------------------------- JSON


def json_to_bytes(obj: Any) -> bytes:
    """Encode ``obj`` as indented, key-sorted UTF-8 JSON with a final newline.

    Args:
        obj: A JSON-able object (dicts, lists, str, numbers, bools, None).

    Returns:
        The encoded bytes.

    Raises:
        TypeError: ``obj`` holds something JSON cannot represent.
    """
    return (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode("utf-8")


def json_from_bytes(data: bytes) -> Any:
    """Decode UTF-8 JSON bytes.

    Args:
        data: The encoded bytes.

    Returns:
        The decoded object.
    """
    return json.loads(data.decode("utf-8"))


def save_json(obj: Any, path: str | os.PathLike[str]) -> None:
    """Write ``obj`` as JSON (see `json_to_bytes`) to a local path.

    Args:
        obj: A JSON-able object.
        path: Destination file.
    """
    data = json_to_bytes(obj)
    with open(path, "wb") as f:
        f.write(data)


def load_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file from a local path.

    Args:
        path: Source file.

    Returns:
        The decoded object.
    """
    with open(path, "rb") as f:
        return json_from_bytes(f.read())
