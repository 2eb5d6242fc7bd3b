#!/usr/bin/env python
"""Run the sweeps behind a table of the docs (resumable), then print the table beside its
anchors: ``python scripts/reproduce.py <table>``; ``--list`` names the tables. The same
command is installed as ``attnlstm-reproduce`` (:mod:`attnlstm.reproduce.cli`)."""

import sys

import attnlstm.runtime  # noqa: F401  (sets the OpenMP threads before torch loads)
from attnlstm.reproduce.cli import main

if __name__ == "__main__":
    sys.exit(main())
