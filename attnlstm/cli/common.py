"""What the commands share: loading a run with errors a user can act on, and reporting them
as one ``error: ...`` line with exit status 2."""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path
from typing import NoReturn

from attnlstm.runs import LoadedRun, load_run

__all__ = ["USAGE_STATUS", "ArgumentParser", "UsageError", "fail", "open_run"]

#: the exit status of every command's errors (as argparse's own)
USAGE_STATUS = 2


class UsageError(Exception):
    """A command line argparse rejected; :class:`ArgumentParser` raises it instead of exiting."""


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors raise :class:`UsageError` (so that
    ``main`` prints one ``error:`` line and returns 2) rather than printing the usage and
    calling ``sys.exit``; ``--help`` still prints and exits 0."""

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` with argparse's ``message``."""
        raise UsageError(message)


def fail(error: BaseException | str) -> int:
    """Print ``error: <error>`` on one line of stderr (a message of several lines joined with
    ``; ``) and return :data:`USAGE_STATUS`."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    print(f"error: {'; '.join(lines) or type(error).__name__}", file=sys.stderr)
    return USAGE_STATUS


def open_run(path: str | Path, model: str | None = None) -> LoadedRun:
    """:func:`attnlstm.runs.load_run` on the CPU, with a file that is no attnlstm checkpoint
    reported as a ValueError (a plain sentence) rather than torch's or pickle's own error.

    Args:
        path: a run folder (its best.pt, else last.pt) or a ``.pt`` file.
        model: the ``model=`` the run must have been trained with, or None for any.

    Returns:
        The loaded run: its model in eval mode, config, task state, spec and checkpoint file.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: not a checkpoint of this attnlstm, or a run of another model.
    """
    try:
        return load_run(path, "cpu", model=model)
    except (FileNotFoundError, ValueError):
        raise
    except (
        pickle.UnpicklingError,
        EOFError,
        RuntimeError,
        KeyError,
        TypeError,
        AttributeError,
        OSError,
    ) as error:
        first_line = (str(error).splitlines() or [""])[0]
        raise ValueError(
            f"{path} is not an attnlstm checkpoint ({type(error).__name__}: {first_line})"
        ) from error
