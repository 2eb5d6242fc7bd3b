"""A command whose reader leaves early (``attnlstm-compare runs | head -1``) stops quietly with
status 141, as a command ended by SIGPIPE does, instead of a BrokenPipeError traceback."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from attnlstm.console import EXIT_CLOSED_PIPE
from tests.test_compare_seeds import write_run

ROOT = Path(__file__).resolve().parent.parent


def run_into_closed_pipe(args: list[str]) -> tuple[int, str]:
    """Run ``python args`` with its stdout a pipe whose reading end is already closed (what
    ``| head -1`` leaves once it has its line); its exit status and stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [sys.executable, *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
            timeout=120,
        )
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


def test_reproduce_list_stops_quietly() -> None:
    code, err = run_into_closed_pipe(["scripts/reproduce.py", "--list"])
    assert (code, err) == (EXIT_CLOSED_PIPE, "")


def test_compare_stops_quietly(tmp_path: Path) -> None:
    for seed in (1, 2):
        write_run(tmp_path / "sweep" / f"seed={seed}", "dot", seed, 0.5, 0.8, 2)
    code, err = run_into_closed_pipe(["-m", "attnlstm.compare", str(tmp_path / "sweep")])
    assert (code, err) == (EXIT_CLOSED_PIPE, "")


def test_the_commands_wrapper_stops_quietly() -> None:
    """attnlstm-evaluate, -generate, -tag and -translate share ``command``, whose error path
    would otherwise take the BrokenPipeError (an OSError) for bad input: status 2."""
    script = textwrap.dedent(
        """
        import sys
        from attnlstm.cli.common import command

        @command
        def main(argv):
            for line in range(10_000):
                print(f"line {line}")
            return 0

        sys.exit(main([]))
        """
    )
    code, err = run_into_closed_pipe(["-c", script])
    assert (code, err) == (EXIT_CLOSED_PIPE, "")


def test_an_open_pipe_changes_nothing() -> None:
    """The guard ends in the command's own status when stdout is read to the end."""
    done = subprocess.run(
        [sys.executable, "scripts/reproduce.py", "--list"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert done.returncode == 0 and done.stderr == "" and "raffel" in done.stdout
