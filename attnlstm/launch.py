"""The ``attnlstm-train`` command (and ``python -m attnlstm``), kept light.

:mod:`attnlstm.train` imports torch and Hydra, which takes seconds. A user who types
``attnlstm-train --help`` sees the help's first line at once, from here, and the rest (Hydra's
``hydra/help`` template, ``conf/hydra/help/attnlstm.yaml``, which starts after that line) once
the trainer is imported. This module imports the standard library only (and
:mod:`attnlstm.sigint` and :mod:`attnlstm.console`, which do too), and
:mod:`attnlstm.runtime` first of all: OpenMP's wait policy and threads are chosen before torch
is loaded.
"""

from __future__ import annotations

import attnlstm.runtime  # noqa: F401  # before torch: OpenMP reads its settings when loaded

# isort: split

import sys

from attnlstm.console import quiet_on_closed_pipe
from attnlstm.sigint import StartUpInterrupts

#: the first line of ``attnlstm-train --help`` (a blank line follows); the template does not
#: repeat it
HELP_FIRST_LINE = (
    "usage: attnlstm-train [-m] [group=option ...] [key=value ...]   (-m: a sweep of many runs)"
)

_HELP_FLAGS = ("--help", "-h")


def wants_help(argv: list[str]) -> bool:
    """Whether the command line ``argv`` (without the program name) asks for the app's help."""
    return any(arg in _HELP_FLAGS for arg in argv)


@quiet_on_closed_pipe
def main() -> None:
    """Console entry point: the help's first line at once when asked for, then the trainer
    (:func:`attnlstm.train.main`, which reads ``sys.argv`` through Hydra).

    A closed stdout (``attnlstm-train --cfg job | head``) ends it with status 141 and no
    traceback, except where Python writes unbuffered (``PYTHONUNBUFFERED=1``) and the write
    fails inside Hydra's ``--cfg`` or ``--help``: Hydra reports that error itself."""
    if wants_help(sys.argv[1:]):
        print(HELP_FIRST_LINE, end="\n\n", flush=True)
    with StartUpInterrupts():  # Ctrl-C from here on exits 130, wherever it lands
        try:
            from attnlstm.train import main as train_main
        except KeyboardInterrupt:  # Ctrl-C while torch and Hydra load: nothing made yet
            print("error: interrupted during start-up; nothing was made", file=sys.stderr)
            raise SystemExit(130) from None
        train_main()


if __name__ == "__main__":
    sys.exit(main())
