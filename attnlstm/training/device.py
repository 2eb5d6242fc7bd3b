"""``device=auto|cpu|cuda`` (with ``device.index``) to a ``torch.device``."""

from __future__ import annotations

import logging

import torch

from attnlstm.errors import ConfigError

log = logging.getLogger(__name__)


def resolve_device(kind: str, index: int = 0) -> torch.device:
    """The device to train on.

    ``cuda`` without a usable GPU is an error; ``auto`` takes ``cuda:<index>`` when there is
    one and otherwise falls back to the CPU, saying so.
    """
    kind = str(kind)
    if kind == "cpu":
        return torch.device("cpu")
    available = torch.cuda.is_available()
    count = torch.cuda.device_count() if available else 0
    if kind == "cuda":
        if not available:
            build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                f"device=cuda was chosen, but PyTorch finds no CUDA GPU (torch {torch.__version__},"
                f" {build}); use device=cpu, or device=auto to use a GPU only when there is one"
            )
        if not 0 <= index < count:
            raise ConfigError(
                f"device.index={index}, but this machine has {count} CUDA GPU(s):"
                f" valid indices are 0..{count - 1}"
            )
        return torch.device("cuda", index)
    if kind != "auto":
        raise ConfigError(f"unknown device {kind!r}; choose auto, cpu or cuda")
    if available and 0 <= index < count:
        device = torch.device("cuda", index)
        log.info("device=auto: using %s (%s)", device, torch.cuda.get_device_name(index))
        return device
    log.warning("device=auto: no CUDA GPU found, training on the CPU")
    return torch.device("cpu")
