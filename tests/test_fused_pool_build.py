"""Loading the fused pooling kernel never hangs: a ``lock`` file that a killed build left in the
build folder is removed, and a process that waits for another one's build gives up after
``BUILD_WAIT_S`` and takes the chunked pooling.

torch's ``load`` is replaced by a stand-in here (these tests check who may call it, and when),
except in the slow test at the end, which builds the real kernel in a fresh folder with a stale
lock in it. The CI once waited 600 s on such a lock, left by a test run killed mid-build.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
import torch.utils.cpp_extension

from attnlstm.models import fused_pool


@pytest.fixture
def loads(monkeypatch, tmp_path) -> Iterator[list[dict]]:
    """Build into ``tmp_path``, with torch's ``load`` replaced by one that records its keyword
    arguments and whether torch's lock file was there when it was called."""
    calls: list[dict] = []

    def fake_load(**kwargs):
        lock = Path(kwargs["build_directory"]) / fused_pool.TORCH_LOCK_NAME
        calls.append({**kwargs, "lock_there": lock.exists(), "at": time.monotonic()})
        return "the kernel"

    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    monkeypatch.delenv(fused_pool.DISABLE_ENV, raising=False)
    monkeypatch.delenv(fused_pool.CFLAGS_ENV, raising=False)
    monkeypatch.setattr(torch.utils.cpp_extension, "load", fake_load)
    fused_pool.fused_kernel.cache_clear()
    yield calls
    fused_pool.fused_kernel.cache_clear()


def _folder() -> Path:
    return fused_pool.build_directory(f"attnlstm_fused_pool_{fused_pool._machine_tag()}")


def _torch_lock(age_s: float = 0.0) -> Path:
    """torch's lock file in the build folder, last touched ``age_s`` seconds ago."""
    folder = _folder()
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / fused_pool.TORCH_LOCK_NAME
    lock.touch()
    then = time.time() - age_s
    os.utime(lock, (then, then))
    return lock


def test_the_build_folder_is_under_torch_extensions_dir_per_python_and_torch(loads, tmp_path):
    version = torch.__version__.replace("+", "_")  # 2.13.0_cpu
    python = f"py{sys.version_info.major}{sys.version_info.minor}"
    installed = os.path.dirname(os.path.abspath(torch.__file__))
    tag = hashlib.sha1(installed.encode()).hexdigest()[:6]
    assert fused_pool.build_directory("k") == tmp_path / f"{python}_torch{version}_{tag}" / "k"
    assert fused_pool.fused_kernel() == "the kernel"
    assert loads[0]["build_directory"] == str(_folder())


def test_each_torch_installation_builds_in_a_folder_of_its_own(tmp_path, monkeypatch):
    """Two virtual environments with the same torch version: torch's ``build.ninja`` names the
    include folders of the torch that built the kernel, so in one shared folder each rebuilt
    it (about a minute) whenever the other had used it last (measured 2026-12-06, after a CI
    run's fresh environment). A torch reached through a link writes the link's path into
    ``build.ninja`` (``cpp_extension`` takes ``os.path.abspath``, which keeps links), so it
    builds apart too; the same path twice shares the folder."""

    def folder_for(torch_init: Path) -> Path:
        monkeypatch.setattr(fused_pool.torch, "__file__", str(torch_init))
        return fused_pool.build_directory("k")

    first, second = tmp_path / "venv-a" / "torch", tmp_path / "venv-b" / "torch"
    for installed in (first, second):
        installed.mkdir(parents=True)
        (installed / "__init__.py").touch()
    (tmp_path / "linked").symlink_to(first)

    assert folder_for(first / "__init__.py") != folder_for(second / "__init__.py")
    assert folder_for(first / "__init__.py") == folder_for(first / "__init__.py")
    assert folder_for(first / "__init__.py") != folder_for(tmp_path / "linked" / "__init__.py")
    assert folder_for(first / "__init__.py").parent.name.startswith(
        f"py{sys.version_info.major}{sys.version_info.minor}_torch"
    )


def test_a_lock_left_by_a_killed_build_is_removed_before_loading(loads, caplog):
    """torch's ``lock`` file, an hour old, and no process holding the turn: a build that was
    killed. Before the fix ``load`` found it and waited for it forever."""
    _torch_lock(age_s=3600)
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger=fused_pool.__name__):
        assert fused_pool.fused_kernel() == "the kernel"
    assert [call["lock_there"] for call in loads] == [False]
    assert loads[0]["at"] - started < 0.5 * fused_pool.LEFTOVER_AFTER_S  # not waited for
    assert "left by a build of the kernel that was killed" in caplog.text


def test_a_young_lock_is_waited_for_then_taken_for_a_leftover(loads, monkeypatch, caplog):
    """A lock file younger than ``LEFTOVER_AFTER_S`` may be a build that does not take turns
    (another machine on a network file system): it is waited for, and removed only once it is
    that old."""
    monkeypatch.setattr(fused_pool, "LEFTOVER_AFTER_S", 1.0)
    lock = _torch_lock(age_s=0.0)
    made = lock.stat().st_mtime
    with caplog.at_level(logging.WARNING, logger=fused_pool.__name__):
        assert fused_pool.fused_kernel() == "the kernel"
    assert time.time() - made >= 1.0
    assert [call["lock_there"] for call in loads] == [False]
    assert "waiting until it goes" in caplog.text and "removing" in caplog.text


def test_a_young_lock_that_goes_is_not_removed_by_this_process(loads, monkeypatch, caplog):
    """The other build finishes (its lock goes) while this process waits: it loads then, and
    removes nothing."""
    monkeypatch.setattr(fused_pool, "LEFTOVER_AFTER_S", 60.0)
    lock = _torch_lock(age_s=0.0)
    finish = threading.Timer(0.6, lock.unlink)
    finish.start()
    try:
        with caplog.at_level(logging.WARNING, logger=fused_pool.__name__):
            assert fused_pool.fused_kernel() == "the kernel"
    finally:
        finish.cancel()
        finish.join()
    assert [call["lock_there"] for call in loads] == [False]
    assert "waiting until it goes" in caplog.text and "removing" not in caplog.text


def test_a_build_under_way_in_another_process_is_waited_for(loads, monkeypatch):
    """Another process holds the turn (and torch's lock, as a live build does): this one waits
    until the turn is free, leaves the live lock alone, and loads only then."""
    monkeypatch.setattr(fused_pool, "BUILD_WAIT_S", 30.0)
    lock = _torch_lock(age_s=3600)  # old, yet live: the turn says so
    seen_by_the_builder: list[bool] = []
    with open(_folder() / "attnlstm.flock", "a") as holder:  # another open file: another holder
        fcntl.flock(holder, fcntl.LOCK_EX)

        def finish_build() -> None:
            seen_by_the_builder.append(lock.exists())
            lock.unlink(missing_ok=True)
            fcntl.flock(holder, fcntl.LOCK_UN)

        released_at = time.monotonic() + 0.6
        finish = threading.Timer(0.6, finish_build)
        finish.start()
        try:
            assert fused_pool.fused_kernel() == "the kernel"
        finally:
            finish.cancel()
            finish.join()
    assert seen_by_the_builder == [True]  # the waiting process did not remove the live lock
    assert len(loads) == 1 and loads[0]["at"] >= released_at - 0.05
    assert not loads[0]["lock_there"]


def test_a_build_that_takes_too_long_is_given_up_for_the_chunked_pooling(
    loads, monkeypatch, caplog
):
    monkeypatch.setattr(fused_pool, "BUILD_WAIT_S", 0.5)
    _folder().mkdir(parents=True)
    with open(_folder() / "attnlstm.flock", "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        started = time.monotonic()
        with caplog.at_level(logging.WARNING, logger=fused_pool.__name__):
            assert fused_pool.fused_kernel() is None
        waited = time.monotonic() - started
    assert loads == []
    assert 0.5 <= waited < 30
    assert "using the chunked pooling" in caplog.text


def test_a_file_system_without_flock_still_loads(loads, monkeypatch):
    """Some mounts refuse ``flock`` (ENOLCK): the kernel is loaded without a turn, as before the
    turns existed, and a lock file there is left to torch."""

    def no_flock(*_args, **_kwargs):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_flock)
    _torch_lock(age_s=3600)
    assert fused_pool.fused_kernel() == "the kernel"
    assert [call["lock_there"] for call in loads] == [True]


def test_an_unwritable_build_folder_means_no_kernel_not_a_crash(loads, monkeypatch, tmp_path):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(blocker))
    assert fused_pool.fused_kernel() is None
    assert loads == []


def test_the_kernel_is_built_from_a_copy_of_its_source_in_the_build_folder(loads):
    """torch names the source in ``build.ninja`` by its path: a copy at a fixed place in the
    build folder keeps one build for every checkout; it is rewritten only when it differs."""
    assert fused_pool.fused_kernel() == "the kernel"
    (staged,) = loads[0]["sources"]
    staged = Path(staged)
    assert staged.parent == _folder()
    assert staged.read_bytes() == fused_pool.SOURCE.read_bytes()

    then = time.time() - 3600
    os.utime(staged, (then, then))
    fused_pool.fused_kernel.cache_clear()
    assert fused_pool.fused_kernel() == "the kernel"
    assert loads[1]["sources"] == [str(staged)]
    assert staged.stat().st_mtime == pytest.approx(then)  # the same bytes: left alone

    staged.write_text("// an older version of the kernel\n")
    fused_pool.fused_kernel.cache_clear()
    assert fused_pool.fused_kernel() == "the kernel"
    assert staged.read_bytes() == fused_pool.SOURCE.read_bytes()
    assert [path.name for path in _folder().iterdir() if "partial" in path.name] == []


@pytest.mark.slow
@pytest.mark.skipif(
    not (torch.utils.cpp_extension.is_ninja_available() and shutil.which("c++")),
    reason="no C++ compiler or ninja here",
)
def test_the_real_kernel_builds_past_a_stale_lock_once_for_every_checkout(tmp_path) -> None:
    """A fresh build folder with an hour-old torch lock file already in it, as a killed build
    leaves it: the kernel builds (about a minute) instead of waiting forever. Then a copy of the
    package at another path (a second checkout, or an installed copy) loads that build without
    compiling again: before the source was staged in the build folder, torch's ``build.ninja``
    named the package's own path, and every change of checkout rebuilt the kernel."""
    extensions = tmp_path / "extensions"
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(extensions)}
    env.pop(fused_pool.DISABLE_ENV, None)
    env.pop(fused_pool.CFLAGS_ENV, None)
    script = (
        "import os, time\n"
        "from attnlstm.models import fused_pool\n"
        "folder = fused_pool.build_directory("
        "f'attnlstm_fused_pool_{fused_pool._machine_tag()}')\n"
        "folder.mkdir(parents=True)\n"
        "lock = folder / fused_pool.TORCH_LOCK_NAME\n"
        "lock.touch()\n"
        "os.utime(lock, (time.time() - 3600, time.time() - 3600))\n"
        "print('built' if fused_pool.fused_kernel() is not None else 'none')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=400
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "built", done.stdout + done.stderr[-2000:]
    assert not list(extensions.rglob(fused_pool.TORCH_LOCK_NAME))

    (built,) = extensions.rglob("*.so")
    stamp = built.stat().st_mtime_ns
    checkout = tmp_path / "another checkout"
    shutil.copytree(Path(fused_pool.__file__).parents[1], checkout / "attnlstm")
    again = (
        "from attnlstm.models import fused_pool\n"
        "print(fused_pool.SOURCE)\n"
        "print('loaded' if fused_pool.fused_kernel() is not None else 'none')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", again],
        env={**env, "PYTHONPATH": str(checkout)},
        cwd=checkout,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    source, loaded = done.stdout.strip().splitlines()
    assert Path(source).is_relative_to(checkout)  # the copy, not the package under test
    assert loaded == "loaded"
    assert built.stat().st_mtime_ns == stamp  # not compiled again
