"""A command whose reader leaves early (``attnlstm-compare runs | head -1``) stops quietly with
status 141, as a command ended by SIGPIPE does, instead of a BrokenPipeError traceback; a
closed stderr is not taken for a closed stdout.

Each case runs with Python's usual buffered stdout and with ``PYTHONUNBUFFERED=1``: the
first meets the closed pipe in the last flush, the second at the first write."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from attnlstm.console import EXIT_CLOSED_PIPE
from tests.test_compare_seeds import write_run

ROOT = Path(__file__).resolve().parent.parent

BUFFERING = pytest.mark.parametrize("unbuffered", [False, True], ids=["buffered", "unbuffered"])


def environment(unbuffered: bool) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    if unbuffered:
        env["PYTHONUNBUFFERED"] = "1"
    return env


def closed_pipe() -> int:
    """The writing end of a pipe whose reading end is already closed (what ``| head -1``
    leaves once it has its line)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    return write_end


def run_python(
    args: list[str], unbuffered: bool = False, **streams: Any
) -> subprocess.CompletedProcess[str]:
    """``python args`` from the checkout's root, in the buffering mode asked for; ``streams``
    are subprocess.run's stdout/stderr (captured where not given)."""
    streams.setdefault("stdout", subprocess.PIPE)
    streams.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(
        [sys.executable, *args],
        text=True,
        cwd=ROOT,
        env=environment(unbuffered),
        timeout=120,
        **streams,
    )


def run_into_closed_pipe(args: list[str], unbuffered: bool) -> tuple[int, str]:
    """Run ``python args`` with stdout a closed pipe; its exit status and stderr."""
    stdout = closed_pipe()
    try:
        done = run_python(args, unbuffered, stdout=stdout)
    finally:
        os.close(stdout)
    return done.returncode, done.stderr


@pytest.fixture
def sweep(tmp_path: Path) -> Path:
    for seed in (1, 2):
        write_run(tmp_path / "sweep" / f"seed={seed}", "dot", seed, 0.5, 0.8, 2)
    return tmp_path / "sweep"


@BUFFERING
def test_reproduce_list_stops_quietly(unbuffered: bool) -> None:
    code, err = run_into_closed_pipe(["scripts/reproduce.py", "--list"], unbuffered)
    assert (code, err) == (EXIT_CLOSED_PIPE, "")


@BUFFERING
def test_compare_stops_quietly(sweep: Path, unbuffered: bool) -> None:
    code, err = run_into_closed_pipe(
        ["-m", "attnlstm.compare", str(sweep), "--no-plot"], unbuffered
    )
    assert (code, err) == (EXIT_CLOSED_PIPE, "")


@BUFFERING
def test_the_commands_wrapper_stops_quietly(unbuffered: bool) -> None:
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
    code, err = run_into_closed_pipe(["-c", script], unbuffered)
    assert (code, err) == (EXIT_CLOSED_PIPE, "")


@BUFFERING
def test_the_help_stops_quietly(unbuffered: bool) -> None:
    """``--help`` exits through SystemExit: its output is flushed inside the guard too."""
    helpers = [[f"scripts/{name}_table.py", "--help"] for name in ("raffel", "seq2seq", "sst2")]
    for args in (["scripts/reproduce.py", "--help"], ["-m", "attnlstm", "--help"], *helpers):
        code, err = run_into_closed_pipe(args, unbuffered)
        # unbuffered, argparse's own write drops the error: its usual status 0
        assert err == "" and code in (0, EXIT_CLOSED_PIPE), (args, code, err)
        if not unbuffered:
            assert code == EXIT_CLOSED_PIPE


def test_train_show_config_stops_quietly() -> None:
    """``attnlstm-train --cfg job | head``: Hydra prints the config, the guard's flush meets
    the closed pipe (buffered; unbuffered, Hydra reports its own failed write)."""
    code, err = run_into_closed_pipe(["-m", "attnlstm", "task=addition", "--cfg", "job"], False)
    assert (code, err) == (EXIT_CLOSED_PIPE, "")


@BUFFERING
def test_a_closed_stderr_keeps_the_output(sweep: Path, tmp_path: Path, unbuffered: bool) -> None:
    """stdout a file, stderr a closed pipe: compare's note on stderr ("validation curves:
    <file>") fails, and the table already written to stdout is kept, not thrown away."""
    command = ["-m", "attnlstm.compare", str(sweep), "--plot"]
    expected = run_python([*command, str(tmp_path / "a.png")], unbuffered)
    assert expected.returncode == 0 and "validation curves" in expected.stderr
    stderr = closed_pipe()
    table = tmp_path / "table.md"
    try:
        with table.open("w") as stdout:
            done = run_python(
                [*command, str(tmp_path / "b.png")], unbuffered, stdout=stdout, stderr=stderr
            )
    finally:
        os.close(stderr)
    assert done.returncode != EXIT_CLOSED_PIPE
    assert table.read_text() == expected.stdout and expected.stdout.count("|") > 4


def test_an_open_pipe_changes_nothing() -> None:
    """The guard ends in the command's own status when stdout is read to the end."""
    done = run_python(["scripts/reproduce.py", "--list"])
    assert done.returncode == 0 and done.stderr == "" and "raffel" in done.stdout
