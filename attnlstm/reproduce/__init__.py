"""Re-run the sweep behind a results table of the docs and print the table beside its anchors.

``python scripts/reproduce.py <table>`` (or ``attnlstm-reproduce <table>``) runs each of the
table's sweeps as one Hydra multirun in a fixed folder, ``<out>/<table>/<sweep>``, so that
running it again finishes only what is left: finished runs are skipped, stopped ones resume
from their ``last.pt`` (:mod:`attnlstm.sweep_resume`). It then reads every run under
``<out>/<table>`` and prints the table as the docs show it: one row per setting, each number
the mean ± standard deviation over the seeds (:class:`attnlstm.compare.Summary`), beside the
published anchors, and, for tables that compare attention methods, which one wins and whether
the gap exceeds the seed spread.

Modules: :mod:`.tables` (what each table runs and how it prints), :mod:`.left` (which of its
runs are left: ``--left``), :mod:`.cli` (the command).
"""

from attnlstm.reproduce.tables import TABLES, Sweep, Table

__all__ = ["TABLES", "Sweep", "Table"]
