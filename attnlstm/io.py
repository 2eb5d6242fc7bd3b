"""Atomic writes and safe loads for checkpoints and result files."""

from __future__ import annotations

import errno
import json
import math
import os
import pickle
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

from attnlstm.errors import ConfigError

#: the checkpoint format's version; 2 stores the task spec (``spec``), so that a run folder
#: rebuilds its model without the data. :func:`attnlstm.runs.load_run` checks it.
CHECKPOINT_VERSION = 2


def checkpoint_file(path: Path) -> Path:
    """A checkpoint file, or a run folder's best.pt (else last.pt); FileNotFoundError if none."""
    path = Path(path)
    if path.is_dir():
        path = path / "best.pt" if (path / "best.pt").is_file() else path / "last.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    return path


class CheckpointError(ConfigError):
    """A checkpoint file that cannot be read: truncated, corrupt, or not a checkpoint."""


class WriteError(OSError):
    """A result file or checkpoint could not be written (disk full, no permission); the
    previous version of the file, if any, is unchanged."""


#: temporary files of :func:`_atomic_write` (``.<name>.<random>.tmp``); a process killed
#: mid-write leaves one, removed by :func:`remove_stray_temporaries`
_TMP_GLOB = ".*.tmp"


def _file_mode() -> int:
    """The mode a file created with ``open()`` gets: 0o666 less the process's umask
    (``mkstemp`` creates 0o600, which would hide results from the user's group)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, then rename it over ``path``: a
    reader sees the old file or the new one, never half of one. Raises :class:`WriteError`
    with a plain sentence when the disk is full or the folder is not writable."""
    path = Path(path)
    try:
        handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as error:
        raise WriteError(f"cannot write {path}: {error.strerror or error}") from error
    try:
        with os.fdopen(handle, "wb") as tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.chmod(tmp_name, _file_mode())
        os.replace(tmp_name, path)
    except BaseException as error:
        Path(tmp_name).unlink(missing_ok=True)
        if isinstance(error, OSError | RuntimeError) and not isinstance(error, WriteError):
            raise WriteError(_write_failure(path, error)) from error
        raise


def _write_failure(path: Path, error: BaseException) -> str:
    """A sentence for a failed write. torch.save reports a full disk as a RuntimeError from
    its zip writer ("unexpected pos ..."), so the free space is checked to name the cause."""
    code = getattr(error, "errno", None)
    try:
        free = os.statvfs(path.parent).f_bavail * os.statvfs(path.parent).f_frsize
    except OSError:
        free = None
    # torch.save's zip writer hides the OS error: "[enforce fail ...] unexpected pos N vs M"
    short_write = isinstance(error, RuntimeError) and "unexpected pos" in str(error)
    if code == errno.ENOSPC or short_write or (free is not None and free < 1 << 20):
        cause = "the disk is full" + (" (or the file system refused the write)" * short_write)
    elif code in (errno.EACCES, errno.EPERM, errno.EROFS):
        cause = "no permission to write there (read-only or immutable)"
    else:
        cause = str(getattr(error, "strerror", None) or error).splitlines()[0]
    kept = " (the previous version is kept)" if path.exists() else ""
    return f"cannot write {path}: {cause}{kept}"


def remove_stray_temporaries(folder: Path) -> list[Path]:
    """Remove the temporary files that a process killed during an atomic write left in
    ``folder``; call it only while holding the folder's lock. Returns what was removed."""
    removed = []
    for stray in Path(folder).glob(_TMP_GLOB):
        if stray.is_file():
            stray.unlink(missing_ok=True)
            removed.append(stray)
    return removed


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` ``state`` to ``path`` atomically."""
    _atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only).
    A file that is truncated, corrupt, not a checkpoint, or holds objects other than those
    raises :class:`CheckpointError` with a sentence naming it (never PyTorch's advice to
    retry with ``weights_only=False``, which would run code from the file)."""
    path = Path(path)
    try:
        with warnings.catch_warnings():  # random bytes read as an odd pickle protocol
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise CheckpointError(f"no checkpoint at {path}") from None
    except Exception as e:  # random bytes make the unpickler fail in many ways
        reason = "it is truncated or corrupt"
        if isinstance(e, pickle.UnpicklingError) and "Unsupported global" in str(e):
            reason = "it holds objects other than tensors and plain containers (not loaded)"
        raise CheckpointError(
            f"{path} is not a readable attnlstm checkpoint: {reason} (restore it from a"
            " copy, or start a new run)"
        ) from None
    if not isinstance(checkpoint, dict) or "model" not in checkpoint:
        raise CheckpointError(f"{path} is not an attnlstm checkpoint (no model weights in it)")
    return checkpoint


def evaluated_weights(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The weights a checkpoint's validation saw: the averaged ones where the run averaged
    its weights (``optim.averaging``), else the model's own."""
    return checkpoint.get("eval_model") or checkpoint["model"]


def write_text(text: str, path: Path) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    _atomic_write(path, lambda f: f.write(text.encode()))


def strict_json(data: Any) -> Any:
    """``data`` with every NaN or infinite float replaced by None, so that the JSON written is
    strict (``null``; Python's ``json`` would write ``NaN``, which other readers reject)."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: strict_json(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [strict_json(value) for value in data]
    return data


def write_json(data: Any, path: Path) -> None:
    """Write ``data`` as indented, strict JSON (non-finite numbers as ``null``) to ``path``
    atomically."""
    write_text(json.dumps(strict_json(data), indent=2, allow_nan=False) + "\n", path)
