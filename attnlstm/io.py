"""Atomic writes and safe loads for checkpoints and result files."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

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


def _atomic_write(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder, then rename it over ``path``: a
    reader sees the old file or the new one, never half of one."""
    path = Path(path)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as tmp:
            write(tmp)
            tmp.flush()
            os.fsync(tmp.fileno())
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """``torch.save`` ``state`` to ``path`` atomically."""
    _atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (tensors and plain containers only)."""
    return torch.load(path, map_location=map_location, weights_only=True)


def evaluated_weights(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The weights a checkpoint's validation saw: the averaged ones where the run averaged
    its weights (``optim.averaging``), else the model's own."""
    return checkpoint.get("eval_model") or checkpoint["model"]


def write_text(text: str, path: Path) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    _atomic_write(path, lambda f: f.write(text.encode()))


def write_json(data: Any, path: Path) -> None:
    """Write ``data`` as indented JSON to ``path`` atomically."""
    write_text(json.dumps(data, indent=2) + "\n", path)
