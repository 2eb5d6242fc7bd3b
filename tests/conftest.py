"""Shared helpers: compose configs in-process, run the CLI in a subprocess, tiny settings."""

from __future__ import annotations

import attnlstm.runtime  # before torch: OpenMP reads its settings when loaded

# isort: split

import os
import signal
import subprocess
import sys
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import attnlstm.train  # noqa: F401  (registers the schemas and resolvers)
from attnlstm.paths import config_dir
from attnlstm.sigint import StartUpInterrupts

# The fused pooling kernel is compiled on first use (about a minute per machine): only
# tests/test_fused_pool.py builds it; everything else, subprocesses included, keeps the
# chunked pooling it was written against.
os.environ.setdefault("ATTNLSTM_NO_FUSED_POOL", "1")
# Runs compared bit for bit (a resume against an unbroken run) need MKL's AVX2 code path on a
# CPU with AVX-512: with its default (or AVX512,STRICT, or AUTO,STRICT) a resumed run's loss
# differed from the unbroken run's at the 8th digit on an Intel Xeon VM, one thread and
# everything else equal (README, "Resuming"). The test runs' products are small, so the
# slower path costs nothing here.
os.environ.setdefault("MKL_CBWR", "AVX2,STRICT")

#: a problem small enough to train in a second or two
TINY = [
    "task.min_length=20",
    "task.batch_size=16",
    "task.batches_per_epoch=6",
    "task.eval_size=32",
    "task.eval_batch_size=16",
    "model.hidden_size=8",
    "model.head_size=8",
    "trainer.max_epochs=2",
    "trainer.progress_bar=false",
    "trainer.attention_images=2",
    "device=cpu",
]

#: runs whose numbers are compared bit for bit fix their threads: by default the thread
#: governor follows the machine's load, and a float sum split over another number of threads
#: differs in its last bits (attnlstm/training/threads.py)
FIXED_THREADS = "trainer.threads=1"


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """The config ``attnlstm-train <overrides>`` would run with (Hydra's own keys dropped)."""
    with initialize_config_dir(config_dir=str(config_dir()), version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides))


def sigint_as_a_terminal_gives_it() -> None:
    """``preexec_fn`` for a child that a test interrupts with SIGINT: the default action,
    so that Python turns it into KeyboardInterrupt. A test run started in the background by
    a non-interactive shell inherits SIGINT ignored, and so would the child."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextmanager
def default_sigint() -> Iterator[None]:
    """Python's own SIGINT handler, as a command starts with (a test run in the background
    may have inherited SIGINT ignored); the previous handler afterwards."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, before)


@contextmanager
def start_up_ctrl_c_dropped_by_python() -> Iterator[None]:
    """Inside :class:`StartUpInterrupts`: a Ctrl-C whose exception lands in a weakref
    callback (as in the garbage collector or the import system's module locks), where CPython
    prints "Exception ignored" and carries on. Tests using it filter pytest's
    ``PytestUnraisableExceptionWarning``."""
    with default_sigint(), StartUpInterrupts():

        class Thing:
            pass

        thing = Thing()
        reference = weakref.ref(thing, lambda _: os.kill(os.getpid(), signal.SIGINT))
        del thing  # the callback's exception goes nowhere
        assert reference() is None
        yield


def run_cli(
    args: Sequence[str],
    cwd: Path,
    module: str = "attnlstm",
    check: bool = True,
    timeout: float = 240,
    extra_env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """``python -m <module> <args>`` in ``cwd`` (``extra_env`` added to the environment);
    output captured as text."""
    cwd.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "HYDRA_FULL_ERROR": "0", "PYTHONUNBUFFERED": "1", **(extra_env or {})}
    result = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def only_run_dir(root: Path) -> Path:
    """The single run directory (holding metrics.json) under ``root``."""
    runs = sorted(p.parent for p in root.rglob("metrics.json"))
    assert len(runs) == 1, runs
    return runs[0]


def install_wheel_in_fresh_venv(tmp_path: Path) -> Path:
    """Build this checkout's wheel, install it into a fresh venv under ``tmp_path`` (reusing
    this environment's torch, hydra, ... through a .pth file: the paths it lists are added to
    sys.path, but the .pth files inside them, this checkout's editable attnlstm, are not run;
    ``--system-site-packages`` would reach the base interpreter's site-packages, not this
    venv's) and return the venv's folder."""
    import sysconfig
    import venv

    repo = Path(__file__).resolve().parents[1]
    dist = tmp_path / "dist"
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--outdir", str(dist), str(repo)],
        check=True,
        capture_output=True,
    )
    wheel = next(dist.glob("attnlstm-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    venv_site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(venv_site, "borrowed_dependencies.pth").write_text("\n".join(sorted(here)) + "\n")
    subprocess.run(
        [str(python), "-m", "pip", "install", "--no-deps", "--quiet", str(wheel)], check=True
    )
    return env_dir


@pytest.fixture
def tiny() -> list[str]:
    return list(TINY)
