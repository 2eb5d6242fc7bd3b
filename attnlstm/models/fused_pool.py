"""Raffel & Ellis's dense layer and attention (or mean) pooling as one compiled CPU kernel.

The same function as :mod:`attnlstm.models.long_pooling`'s chunked pooling,

    p_t = W x_t + b,   h_t = LReLU(p_t),   e_t = tanh(w . h_t + b_a),
    alpha = softmax(e) over each sequence's real steps,   c = sum_t alpha_t h_t
    (``mean``: alpha_t = 1 / L),

with shapes x (B, T, F) -> c (B, D), alpha (B, T), but computed step by step in C++
(``fused_pool.cpp``): p_t and h_t live in a D-float buffer, the forward pass is one sweep
through the steps and the backward pass one more (recomputing h_t), and the sequences are
split over torch's threads in a single parallel region. The chunked pooling runs about ten
small torch kernels per chunk, each a pass through memory and an OpenMP barrier; here every
(t, d) element is touched once per pass, in registers.

The kernel is compiled on first use with :func:`torch.utils.cpp_extension.load` (a C++ compiler
and ninja are needed; the build is cached under ``TORCH_EXTENSIONS_DIR``, by default
``~/.cache/torch_extensions``, in a folder per Python version, torch version and torch
installation, and takes about a minute once; the folder holds its own copy of the source, so
that every checkout of the same source run with the same torch installation shares the build;
another installation, a CI's fresh virtual environment for one, builds once in a folder of its
own, since ``build.ninja`` names its torch's include folders).
:func:`fused_kernel` returns None where it cannot be built, and ``model.pooling=auto`` then
uses the chunked pooling.

Processes that load the kernel at once take turns through an ``flock`` on the build folder
(:func:`_build_turn`). torch's own guard is a ``lock`` file that its builder deletes when it
finishes; a builder killed on the way (SIGKILL, a cluster's time limit, the out-of-memory
killer) leaves the file behind, and every later ``load`` would wait for it forever, silently.
An ``flock`` dies with its process, so the process holding the turn knows that a ``lock`` file
it finds was left by a build that does not take turns with it: a killed one, which it removes
once the file is ``LEFTOVER_AFTER_S`` old, or one on another machine sharing the folder over
a network file system, which it waits for until then.
"""

from __future__ import annotations

import hashlib
import logging
import os
import platform
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # not POSIX: torch's own lock file is the only guard
    fcntl = None  # type: ignore[assignment]

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx

from attnlstm.models.long_pooling import _row_lengths

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("fused_pool.cpp")
#: set to 1 to never build or use the kernel (``pooling=auto`` then takes the chunked pooling)
DISABLE_ENV = "ATTNLSTM_NO_FUSED_POOL"
#: extra compiler flags, for example ``-mno-avx512f`` to build and test the 8-lane (AVX2) code
#: on a machine with AVX-512; each set of flags gets its own build
CFLAGS_ENV = "ATTNLSTM_FUSED_POOL_CFLAGS"
#: lets the compiler split a sum over D into vector lanes (a dot product is otherwise a chain
#: of D dependent additions, several times slower); changes the last bits, as any summation
#: order does, and nothing else (no fast-math approximations of tanh or exp)
_REORDERED_SUMS = [
    "-fassociative-math",
    "-fno-signed-zeros",
    "-fno-trapping-math",
    "-funroll-loops",
    "-fvariable-expansion-in-unroller",
]


#: how long a process waits for another one's build of the kernel before it gives up on the
#: kernel (and ``pooling=auto`` takes the chunked pooling); a build takes about a minute
BUILD_WAIT_S = 900.0
#: torch's lock file in the build folder, present while (or because) a build runs
TORCH_LOCK_NAME = "lock"
#: the age at which torch's lock file, found while this process holds the build turn, is taken
#: for a killed build's and removed (a build takes about a minute; younger ones are waited for)
LEFTOVER_AFTER_S = 300.0


def build_directory(name: str) -> Path:
    """The folder that extension ``name`` is built and cached in:
    ``$TORCH_EXTENSIONS_DIR`` (or ``~/.cache/torch_extensions``) /
    ``py<XY>_torch<version>_<installation>`` / ``name``, for example
    ``py311_torch2.13.0_cpu_3fa2c1``. The torch version and build (``+cpu``, ``+cu128``) are
    in the path because the module is linked against that torch: another one builds afresh
    instead of loading a module made for the first. The installation (:func:`_torch_tag`) is
    in it because torch's ``build.ninja`` names the include folders of the torch that built
    it: two virtual environments with the same torch version sharing one folder rebuilt it
    (about a minute) each time the other had used it last."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if not root:
        from torch.utils.cpp_extension import get_default_build_root

        root = get_default_build_root()
    version = torch.__version__.replace("+", "_")
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    return Path(root) / f"{python}_torch{version}_{_torch_tag()}" / name


def _torch_tag() -> str:
    """6 hex digits naming the folder torch is installed in, by the absolute path that torch's
    ``cpp_extension`` writes into ``build.ninja`` (``os.path.abspath``, links not resolved: a
    torch reached through a link writes other include paths, and so builds apart)."""
    installed = os.path.dirname(os.path.abspath(torch.__file__))
    return hashlib.sha1(installed.encode()).hexdigest()[:6]


@contextmanager
def _build_turn(directory: Path, wait_s: float) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``directory``/attnlstm.flock while torch loads (and, the
    first time, builds) the kernel there; yields False, holding nothing, when another process
    keeps it longer than ``wait_s`` seconds. Holding it, the process clears torch's ``lock``
    file if one is there (:func:`_clear_leftover_lock`): every process of this package takes
    the turn before torch's lock, so a lock file found inside the turn was left by a build that
    does not take turns with this one, most often a killed one. Where the file system refuses
    ``flock`` (some NFS, Lustre or FUSE mounts) the
    process goes on without a turn, and torch's lock file is the only guard, as before."""
    directory.mkdir(parents=True, exist_ok=True)
    if fcntl is None:  # not POSIX
        yield True
        return
    with open(directory / "attnlstm.flock", "a") as turn:
        state = _take_turn(turn, directory, wait_s)
        if state == "timed out":
            yield False
            return
        try:
            if state == "held":
                _clear_leftover_lock(directory)
            yield True
        finally:
            if state == "held":
                fcntl.flock(turn, fcntl.LOCK_UN)


def _take_turn(turn: Any, directory: Path, wait_s: float) -> str:
    """``"held"`` once this process holds the ``flock`` on ``turn``; ``"timed out"`` after
    ``wait_s`` seconds of another's holding it; ``"unsupported"`` where ``flock`` fails."""
    deadline = time.monotonic() + wait_s
    said = False
    while True:
        try:
            fcntl.flock(turn, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return "held"
        except BlockingIOError:
            pass
        except OSError as error:  # ENOLCK, ENOSYS, EOPNOTSUPP: no flock on this mount
            log.info("no flock in %s (%s): torch's lock file alone guards it", directory, error)
            return "unsupported"
        if time.monotonic() >= deadline:
            return "timed out"
        if not said:
            log.info("waiting for another process that builds the kernel in %s", directory)
            said = True
        time.sleep(0.2)


def _clear_leftover_lock(directory: Path) -> None:
    """Remove torch's lock file from ``directory`` once it is ``LEFTOVER_AFTER_S`` old; wait
    for a younger one to go. A young lock may belong to a build that does not take turns with
    this process: on another machine, where a network file system keeps each machine's
    ``flock`` to itself, or a compiler still running after its Python parent was killed."""
    lock = directory / TORCH_LOCK_NAME
    said = False
    while True:
        try:
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:
            return
        if age >= LEFTOVER_AFTER_S:
            log.warning(
                "removing %s (%.0f s old), left by a build of the kernel that was killed", lock, age
            )
            lock.unlink(missing_ok=True)
            return
        if not said:
            log.warning(
                "%s is %.0f s old: a build elsewhere, or one that was killed; waiting until it "
                "goes or is %.0f s old",
                lock,
                age,
                LEFTOVER_AFTER_S,
            )
            said = True
        time.sleep(0.5)


def _machine_tag() -> str:
    """8 hex digits naming this CPU's instruction sets: the kernel is built for the machine it
    runs on (``-march=native``), and a home folder shared by different machines (a cluster's)
    must not hand one machine's build to another, where it could stop on an illegal
    instruction."""
    flags = platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next((line for line in cpuinfo if line.startswith("flags")), flags)
    except OSError:
        pass
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def _staged_source(directory: Path) -> Path:
    """A copy of ``fused_pool.cpp`` in the build folder, rewritten (atomically) only when its
    bytes differ from the package's. torch's ``build.ninja`` names the source by its absolute
    path, so building from the package's own file rebuilt the kernel (about a minute) whenever
    another checkout of the same source, at another path, had built it last with the same
    torch; the copy's path and time stamp stay the same across them, so ninja finds the build
    up to date. (Another torch installation builds in a folder of its own:
    :func:`build_directory`.)"""
    staged = directory / SOURCE.name
    source = SOURCE.read_bytes()
    try:
        if staged.read_bytes() == source:
            return staged
    except FileNotFoundError:
        pass
    partial = staged.with_name(f"{staged.name}.{os.getpid()}.partial")
    partial.write_bytes(source)
    os.replace(partial, staged)
    return staged


@cache
def fused_kernel() -> Any | None:
    """The compiled module (``fused_pool_forward``, ``fused_pool_backward``), or None where it
    cannot be built (no compiler, no ninja) or ``ATTNLSTM_NO_FUSED_POOL=1``; the reason is
    logged once."""
    if os.environ.get(DISABLE_ENV, "") not in ("", "0"):
        return None
    log.info("loading the fused pooling kernel (compiled on first use: about a minute, once)")
    extra = os.environ.get(CFLAGS_ENV, "").split()
    suffix = f"_{hashlib.sha1(' '.join(extra).encode()).hexdigest()[:6]}" if extra else ""
    name = f"attnlstm_fused_pool_{_machine_tag()}{suffix}"
    try:
        from torch.utils.cpp_extension import load

        directory = build_directory(name)

        with _build_turn(directory, BUILD_WAIT_S) as my_turn:
            if not my_turn:
                log.warning(
                    "another process has been building the fused pooling kernel in %s for over "
                    "%.0f s; using the chunked pooling",
                    directory,
                    BUILD_WAIT_S,
                )
                return None
            return load(
                name=name,
                sources=[str(_staged_source(directory))],
                extra_cflags=["-O3", "-march=native", "-fopenmp", *_REORDERED_SUMS, *extra],
                extra_ldflags=["-fopenmp"],
                build_directory=str(directory),
                verbose=False,
            )
    except Exception as error:  # a missing compiler or ninja surfaces as several types
        log.warning(
            "the fused pooling kernel could not be built (%s); using the chunked one",
            str(error).splitlines()[0] if str(error) else type(error).__name__,
        )
        return None


def fused_applies(x: Tensor) -> bool:
    """Whether the kernel can pool ``x``: a float32 CPU tensor, and the kernel builds."""
    return x.device.type == "cpu" and x.dtype == torch.float32 and fused_kernel() is not None


class _FusedPool(torch.autograd.Function):
    """context, weights = pool(x, mask, W, b, w, b_a, attend); see the module docstring."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        x: Tensor,  # B x T x F
        mask: Tensor | None,  # B x T bool, or None
        weight: Tensor,  # D x F
        bias: Tensor,  # D
        score_weight: Tensor,  # 1 x D (unused for the mean)
        score_bias: Tensor,  # 1
        attend: bool,
    ) -> tuple[Tensor, Tensor]:
        kernel = fused_kernel()
        lengths = torch.tensor(_row_lengths(x, mask), dtype=torch.int64)
        context, scores, weights = kernel.fused_pool_forward(
            x,
            lengths,
            weight.detach(),
            bias.detach(),
            score_weight.detach(),
            score_bias.detach(),
            attend,
        )
        ctx.save_for_backward(x, lengths, weight, bias, score_weight, scores, weights, context)
        ctx.attend = attend
        ctx.mark_non_differentiable(weights)
        return context, weights

    @staticmethod
    def backward(ctx: Any, grad_context: Tensor, _grad_weights: Tensor) -> tuple[Any, ...]:
        x, lengths, weight, bias, score_weight, scores, weights, context = ctx.saved_tensors
        grad_x, grad_weight, grad_bias, grad_w, grad_c = fused_kernel().fused_pool_backward(
            grad_context,
            x,
            lengths,
            weight,
            bias,
            score_weight,
            scores,
            weights,
            context,
            ctx.attend,
            ctx.needs_input_grad[0],
        )
        if not ctx.attend:
            return (
                grad_x if ctx.needs_input_grad[0] else None,
                None,
                grad_weight,
                grad_bias,
                None,
                None,
                None,
            )
        return (
            grad_x if ctx.needs_input_grad[0] else None,
            None,
            grad_weight,
            grad_bias,
            grad_w.view_as(score_weight),
            grad_c,  # (1,), as the scorer's bias
            None,
        )


def fused_attention_pool(
    x: Tensor, mask: Tensor | None, dense: torch.nn.Linear, scorer: torch.nn.Linear
) -> tuple[Tensor, Tensor]:
    """c, alpha for h_t = LReLU(dense(x_t)) and e_t = tanh(scorer(h_t)), fused.

    Args:
        x: (B, T, F) float32 on the CPU. mask: (B, T) bool padding mask (True on each
            sequence's first steps, False after them) or None (every step is data).
        dense: Linear(F, D). scorer: Linear(D, 1).

    Returns:
        context (B, D) and weights (B, T); the weights carry no gradient.
    """
    return _FusedPool.apply(x, mask, dense.weight, dense.bias, scorer.weight, scorer.bias, True)


def fused_mean_pool(x: Tensor, mask: Tensor | None, dense: torch.nn.Linear) -> Tensor:
    """Mean over each sequence's real steps of LReLU(dense(x_t)): (B, T, F) -> (B, D), fused."""
    unused = dense.bias.new_zeros(1)
    context, _ = _FusedPool.apply(
        x, mask, dense.weight, dense.bias, unused.expand(1, dense.bias.numel()), unused, False
    )
    return context
