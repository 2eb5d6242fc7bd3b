"""What the commands share: the one error path (one ``error: ...`` line on stderr, exit status
2 for bad input, a traceback only with ``ATTNLSTM_DEBUG=1``), option values checked while the
command line is parsed, output paths checked before the work, and loading a run with errors a
user can act on."""

from __future__ import annotations

import argparse
import functools
import os
import pickle
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from attnlstm.console import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    debug_wanted,
    quiet_on_closed_pipe,
)
from attnlstm.errors import ConfigError
from attnlstm.io import checkpoint_file

if TYPE_CHECKING:
    from attnlstm.runs import LoadedRun

__all__ = [
    "USAGE_STATUS",
    "ArgumentParser",
    "Bounded",
    "UsageError",
    "check_output_folder",
    "command",
    "fail",
    "open_run",
    "read_stdin_lines",
]

#: the exit status of every command's errors of input (as argparse's own)
USAGE_STATUS = EXIT_BAD_INPUT

#: what a user can fix (a bad option, a missing or unreadable run, data that does not fit the
#: model, a file that cannot be read or written): exit status 2. ConfigError is a ValueError.
_BAD_INPUT: tuple[type[BaseException], ...] = (ConfigError, ValueError, OSError)


class UsageError(Exception):
    """A command line argparse rejected; :class:`ArgumentParser` raises it instead of exiting."""


class ArgumentParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` whose errors raise :class:`UsageError` (so that
    ``main`` prints one ``error:`` line and returns 2) rather than printing the usage and
    calling ``sys.exit``; ``--help`` still prints and exits 0."""

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` with argparse's ``message``."""
        raise UsageError(message)


class Bounded(argparse.Action):
    """Store a number that is at least ``minimum`` (``strict``: greater than it) and at most
    ``maximum`` (if given), checked as the command line is parsed, so that a nonsensical value
    (``--words -5``, ``--beam 0``, ``--temperature 0``, NaN) is a usage error naming the
    option before any work starts::

        parser.add_argument("--beam", type=int, default=1, action=Bounded, minimum=1)
    """

    def __init__(
        self,
        option_strings: Sequence[str],
        dest: str,
        *,
        minimum: float,
        maximum: float | None = None,
        strict: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.minimum, self.maximum, self.strict = minimum, maximum, strict

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: Any,
        option_string: str | None = None,
    ) -> None:
        # written so that NaN, which compares false with everything, fails the checks
        low = values > self.minimum if self.strict else values >= self.minimum
        if not (low and (self.maximum is None or values <= self.maximum)):
            if self.maximum is not None:
                rule = f"between {self.minimum} and {self.maximum}"
            elif self.strict:
                rule = "positive" if self.minimum == 0 else f"greater than {self.minimum}"
            else:
                rule = f"at least {self.minimum}"
            parser.error(f"{option_string or self.dest} must be {rule}, got {values}")
        setattr(namespace, self.dest, values)


def fail(error: BaseException | str) -> int:
    """Print ``error: <error>`` on one line of stderr (a message of several lines joined with
    ``; ``) and return :data:`USAGE_STATUS`."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    print(f"error: {'; '.join(lines) or type(error).__name__}", file=sys.stderr)
    return USAGE_STATUS


def command(main: Callable[[Sequence[str] | None], int]) -> Callable[[Sequence[str] | None], int]:
    """Wrap a command's ``main(argv) -> status`` in the commands' one error path.

    A :class:`UsageError`, ConfigError, other ValueError or OSError (no checkpoint, an
    unreadable one, a folder that cannot be written) becomes one ``error:`` line on stderr and
    status 2; any other exception, a bug, one line that says so and status 1; Ctrl-C status
    130; a closed stdout (``| head``) ends it quietly with status 141. Nothing goes to
    stdout, which carries the results only. With ``ATTNLSTM_DEBUG=1`` the traceback is
    printed on stderr too.
    """

    @functools.wraps(main)
    def guarded(argv: Sequence[str] | None = None) -> int:
        try:
            return main(argv)
        except BrokenPipeError:
            raise  # stdout closed: quiet_on_closed_pipe's, not an OSError of the input
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return EXIT_INTERRUPTED
        except (UsageError, *_BAD_INPUT) as error:
            _print_traceback(error)
            return fail(error)
        except Exception as error:
            _print_traceback(error)
            first = (str(error).splitlines() or [""])[0]
            print(
                f"error: {type(error).__name__}: {first} (an attnlstm bug: run again with"
                " ATTNLSTM_DEBUG=1 for the traceback, and report it)",
                file=sys.stderr,
            )
            return EXIT_FAILED

    return quiet_on_closed_pipe(guarded)


def _print_traceback(error: BaseException) -> None:
    """The traceback of ``error`` on stderr, when the user asked for it (ATTNLSTM_DEBUG=1)."""
    if debug_wanted():
        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)


def read_stdin_lines() -> list[str]:
    """The lines of standard input; ConfigError with a sentence when they are not UTF-8 (the
    default decoding would end in a bare UnicodeDecodeError)."""
    try:
        return sys.stdin.read().splitlines()
    except UnicodeDecodeError as error:
        raise ConfigError(
            f"the standard input is not UTF-8 (byte 0x{error.object[error.start]:02X}:"
            f" {error.reason}); re-encode it, e.g. pipe it through `iconv -f latin1 -t utf-8`"
        ) from None


def check_output_folder(folder: Path, option: str) -> None:
    """ConfigError unless ``folder`` (given as ``option``) is a folder this process can write
    in, or one it can make: checked before the work, so that an output path that cannot be
    written does not fail after the results were printed.

    Checked by permission bits (:func:`os.access`) rather than by writing a file, so that a
    command that then fails for another reason leaves nothing behind.
    """
    folder = folder.expanduser().absolute()
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(f"{option} {folder}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        made = "" if existing == folder else f" (it would be made in {existing})"
        raise ConfigError(
            f"{option} {folder}: cannot write there{made}: {existing} is not writable; choose a"
            " folder you can write to"
        )


def open_run(path: str | Path, model: str | None = None) -> LoadedRun:
    """:func:`attnlstm.runs.load_run` on the CPU, with a file that is no attnlstm checkpoint
    reported as a ValueError (a sentence naming it) rather than torch's or pickle's own error.

    Args:
        path: a run folder (its best.pt, else last.pt) or a ``.pt`` file.
        model: the ``model=`` the run must have been trained with, or None for any.

    Returns:
        The loaded run: its model in eval mode, config, task state, spec and checkpoint file.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: not a readable checkpoint of this attnlstm (ConfigError from
            :func:`attnlstm.io.load_checkpoint`), or a run of another model.
    """
    from attnlstm.runs import load_run  # every model family: imported when a run is opened

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
        # torch's own message may advise loading with weights_only=False, which would run
        # code from the file: it is not repeated
        first_line = (str(error).splitlines() or [""])[0]
        detail = "" if "weights_only" in str(error) else f": {type(error).__name__}: {first_line}"
        raise ValueError(
            f"{checkpoint_file(Path(path))} is not a readable attnlstm checkpoint{detail}"
            " (restore it from a copy, or train the run again)"
        ) from error
