"""What the terminal shows when a command ends: exit codes, one-sentence errors, tracebacks
only on request, and the split of log lines between stdout and stderr.

Exit codes of every attnlstm command (README, "Troubleshooting"):

- 0: done (for training: completed, solved or early-stopped)
- 1: failed: a bug, or the system (disk full, out of memory); the message says which
- 2: bad input: a config value, a data file, a run folder or a command-line option
- 3: diverged: the training loss or the validation monitor became NaN or infinite
- 130: interrupted (Ctrl-C, SIGTERM); a run that trained continues with ``resume=<run dir>``
- 141: the reader of stdout left before the end (``attnlstm-compare ... | head``): the output
  stops there, quietly, as a command ended by SIGPIPE does in a shell
"""

from __future__ import annotations

import functools
import logging
import os
import sys
import traceback
from collections.abc import Callable
from typing import NoReturn, ParamSpec, TypeVar

_Arguments = ParamSpec("_Arguments")
_Status = TypeVar("_Status")

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130
EXIT_CLOSED_PIPE = 141


def debug_wanted() -> bool:
    """Whether the user asked for tracebacks: ``ATTNLSTM_DEBUG=1`` or Hydra's
    ``HYDRA_FULL_ERROR=1``."""
    return os.environ.get("ATTNLSTM_DEBUG", "") not in ("", "0") or os.environ.get(
        "HYDRA_FULL_ERROR", ""
    ) not in ("", "0")


def stdout_closed() -> int:
    """The status after a BrokenPipeError: the program reading stdout left early (``| head``).

    Points stdout at the null device first, so that Python's own flush at exit does not fail
    again and print ``Exception ignored ... BrokenPipeError`` (the recipe of Python's docs,
    "Note on SIGPIPE"); says nothing on stderr, which may be the same closed pipe. Returns 141,
    the status a shell shows for a command ended by SIGPIPE.
    """
    null = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, sys.stdout.fileno())
    finally:
        os.close(null)
    return EXIT_CLOSED_PIPE


def stdout_is_broken() -> bool:
    """Whether stdout is a pipe whose reader has left: poll reports an error on it. True
    where poll does not exist (Windows), so that a BrokenPipeError is taken there for the
    reader of stdout leaving, the usual cause."""
    try:
        import select

        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):
        return True


def quiet_on_closed_pipe(
    main: Callable[_Arguments, _Status],
) -> Callable[_Arguments, _Status | int]:
    """Wrap a command's ``main`` so that a closed stdout ends it with :func:`stdout_closed`'s
    status instead of a BrokenPipeError traceback.

    The command's last output is flushed inside the guard, after ``main`` returns or exits
    (argparse's ``--help``, :func:`fail`): a closed pipe is often seen only there. A
    BrokenPipeError from anything else (stderr closed, stdout a file) is raised as before, and
    what stdout holds is kept.
    """

    @functools.wraps(main)
    def guarded(*args: _Arguments.args, **kwargs: _Arguments.kwargs) -> _Status | int:
        try:
            try:
                status = main(*args, **kwargs)
            except SystemExit:
                sys.stdout.flush()
                raise
            sys.stdout.flush()
        except BrokenPipeError:
            if not stdout_is_broken():
                raise
            return stdout_closed()
        return status

    return guarded


def say_error(message: str, error: BaseException | None = None) -> None:
    """``error: <message>`` on stderr, with the traceback of ``error`` when debugging."""
    if error is not None and debug_wanted():
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    print(f"error: {message}", file=sys.stderr, flush=True)


def fail(message: str, code: int = EXIT_BAD_INPUT, error: BaseException | None = None) -> NoReturn:
    """Say ``message`` on stderr and exit with ``code`` (SystemExit, which Hydra does not
    catch or decorate, so it also works inside Hydra's resolvers)."""
    say_error(message, error)
    raise SystemExit(code)


class MaxLevelFilter(logging.Filter):
    """Let through only records below ``level``: info on stdout, warnings and errors on
    stderr (see conf/hydra/job_logging/attnlstm.yaml)."""

    def __init__(self, level: str | int = logging.WARNING) -> None:
        super().__init__()
        self.level = logging.getLevelName(level) if isinstance(level, str) else level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < self.level
