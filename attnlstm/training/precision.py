"""``trainer.precision`` to an autocast context, with the CPU's bfloat16 recurrences checked.

torch's CPU autocast runs an LSTM in bfloat16 through oneDNN's RNN kernel. That kernel needs
bfloat16 instructions (AVX-512 BF16 or AMX); on a CPU without them (an AVX2-only AMD EPYC or
an older Intel) it raises "could not create a primitive descriptor for the LSTM forward
propagation primitive" at the first update. There, the run keeps bfloat16 autocast for the
other operations (embeddings' projections, attention, decoders) and runs the recurrences on
torch's own CPU kernel, in float32, with oneDNN switched off around the forward pass.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

#: ``trainer.precision`` to the autocast dtype; ``32`` is no autocast
AUTOCAST_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "16": torch.float16}


@functools.cache
def cpu_bf16_lstm_works() -> bool:
    """Whether an LSTM runs under CPU bfloat16 autocast on this machine (a 1-step probe,
    in training mode with gradients, as an update runs it; cached for the process)."""
    lstm = nn.LSTM(2, 2)
    try:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            output, _ = lstm(torch.zeros(1, 1, 2))
        output.float().sum().backward()
    except RuntimeError:
        return False
    return True


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    """The context an update's (or an evaluation's) forward pass runs in.

    ``32``: nothing. ``bf16``/``16``: ``torch.autocast`` to that dtype; on a CPU whose oneDNN
    cannot run bfloat16 LSTMs (:func:`cpu_bf16_lstm_works`), also oneDNN off, so that the
    LSTMs take torch's own kernel in float32 while the rest stays in bfloat16.
    """
    dtype = AUTOCAST_DTYPES.get(str(precision))
    if dtype is None:
        return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast(device.type, dtype=dtype))
    if _lstms_in_float32(device, str(precision)):
        stack.enter_context(_onednn_off())
    return stack


def _lstms_in_float32(device: torch.device, precision: str) -> bool:
    """bf16 on a CPU whose oneDNN cannot run bfloat16 LSTMs: they run in float32 instead."""
    return device.type == "cpu" and precision == "bf16" and not cpu_bf16_lstm_works()


@contextlib.contextmanager
def _onednn_off() -> Iterator[None]:
    """oneDNN off for the block, as it was after (``torch.backends.mkldnn.flags`` would also
    reset its TF32 flag, and warn each time that TF32 is for Intel GPUs)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = False
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def describe_cpu_bf16(device: torch.device, precision: str) -> str | None:
    """A sentence for the run's log when bf16 on this CPU runs the recurrences in float32;
    ``None`` when there is nothing to say."""
    if not _lstms_in_float32(device, str(precision)):
        return None
    return (
        "trainer.precision=bf16: this CPU has no bfloat16 instructions for oneDNN's LSTM"
        " kernel (AVX-512 BF16 / AMX), so the LSTMs run in float32 on torch's own kernel and"
        " the rest in bfloat16; on this CPU trainer.precision=32 is likely as fast"
    )
