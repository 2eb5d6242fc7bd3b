"""Claiming a run folder: a new run only in an unused folder, a resumed run only in a folder
that holds a checkpoint, and never two processes in one folder.

A process that trains in a folder holds an exclusive ``flock`` on ``<run dir>/.lock`` for as
long as it runs; the operating system releases it when the process ends, however it ends, so
a killed run never leaves the folder locked. The lock file itself stays (empty but for the
pid of its last holder).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from attnlstm.errors import ConfigError
from attnlstm.io import remove_stray_temporaries

LOCK_NAME = ".lock"


def job_dirname(override_dirname: str) -> str:
    """A multirun job's folder name (``hydra.sweep.subdir``): Hydra's ``override_dirname``,
    shortened with a hash when it would pass the 255-byte file-name limit."""
    if len(override_dirname.encode()) <= 200:
        return override_dirname or "no-overrides"
    digest = hashlib.sha1(override_dirname.encode()).hexdigest()[:10]
    return f"{override_dirname.encode()[:180].decode(errors='ignore')}...{digest}"


def _flock_holders(path: Path) -> list[int] | None:
    """The pids holding a ``flock`` on ``path``, from ``/proc/locks`` (Linux), or None when
    that file cannot be read. Reading it takes no lock, so it can never make a process that
    locks the file at that moment fail."""
    try:
        table = Path("/proc/locks").read_text()
        stat = path.stat()
    except OSError:
        return None
    holders = []
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 15018 fe:00:5498296 0 EOF" (blocked waiters: "-> FLOCK")
        if len(fields) < 6 or fields[1] != "FLOCK":
            continue
        try:
            major, minor, inode = fields[5].split(":")
            found = (int(major, 16), int(minor, 16), int(inode))
        except ValueError:
            continue
        if found == (os.major(stat.st_dev), os.minor(stat.st_dev), stat.st_ino):
            holders.append(int(fields[4]) if fields[4].isdigit() else -1)
    return holders


def lock_holder(folder: Path) -> int | None:
    """The pid of the process training in ``folder`` now (it holds ``folder/.lock``; -1 when
    neither the file nor the system names it), or None when none is. Only looks: the lock
    file is not created, and no lock is taken where ``/proc/locks`` tells (elsewhere a shared
    lock is taken to test and given back at once)."""
    path = Path(folder) / LOCK_NAME
    if not path.is_file():
        return None
    holders = _flock_holders(path)
    if holders is not None:
        if not holders:
            return None
        text = path.read_text(errors="replace").strip()
        return int(text) if text.isdigit() else holders[0]
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        text = os.pread(fd, 32, 0).decode(errors="replace").strip()
        return int(text) if text.isdigit() else -1
    finally:
        os.close(fd)  # closing gives back a lock taken above
    return None


def _unused(path: Path) -> bool:
    """Whether a file in a new run's folder can be ignored: the lock of an earlier attempt
    that did no work, or the empty train.log that Hydra's logging opens before the folder is
    claimed (Hydra sets up logging before it resolves ``hydra.output_subdir``)."""
    if path.name == LOCK_NAME:
        return True
    return path.name == "train.log" and path.is_file() and path.stat().st_size == 0


@dataclass
class RunFolder:
    """A folder this process trains in, with its lock held."""

    path: Path
    fresh: bool  # a new run (else a resumed one)
    existed: bool  # the folder was there before with files in it (never, for a new run)
    lock_fd: int

    def release(self) -> None:
        """Give the lock back (the process's end does it too)."""
        if self.lock_fd >= 0:
            os.close(self.lock_fd)
            self.lock_fd = -1


def _lock(folder: Path) -> int:
    """An exclusive, non-blocking lock on ``folder/.lock``; ConfigError naming the holder if
    another process has it."""
    fd = os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise ConfigError(
            f"{folder} is in use: another attnlstm process (pid {holder}) is training in it;"
            " wait for it to end, or choose another folder"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def check_unused(folder: Path) -> None:
    """ConfigError unless ``folder`` can take a new run: it does not exist, or holds nothing
    (the files of :func:`_unused` aside)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    used = sorted(p.name for p in folder.iterdir() if not _unused(p))
    if used:
        if {"last.pt", "metrics.json", ".hydra"} & set(used):
            hint = f"continue a run with resume={folder}, or choose another hydra.run.dir"
            raise ConfigError(f"{folder} already holds a run; it is never overwritten ({hint})")
        raise ConfigError(
            f"{folder} already holds files ({', '.join(used[:3])}{', ...' * (len(used) > 3)});"
            " a new run needs an empty or new folder: choose another hydra.run.dir"
        )


def claim(folder: Path, fresh: bool) -> RunFolder:
    """Check ``folder`` for a new (``fresh``) or resumed run and lock it, before anything is
    written there. A new run needs a folder that does not exist or is empty; a resumed run
    needs ``last.pt`` (checked by the caller) and gets the temporary files that a killed
    write left removed. Raises ConfigError with the sentence to show."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{folder} is a file, not a folder; choose another hydra.run.dir")
    existed = folder.is_dir()
    if fresh:
        check_unused(folder)
        # Hydra has made the folder already; one with nothing in it counts as new (at worst
        # an empty folder of the user's is removed if this run fails before it trains)
        existed = False
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = _lock(folder)
    except ConfigError:
        raise
    except OSError as error:
        raise ConfigError(
            f"cannot write the run folder {folder}: {error.strerror or error}; choose a"
            " writable place with hydra.run.dir=<folder> (or run from a writable folder)"
        ) from None
    if not fresh:
        remove_stray_temporaries(folder)
    return RunFolder(folder, fresh=fresh, existed=existed, lock_fd=fd)
