#!/usr/bin/env python
"""The SST-2 table of docs/sst2.md from the runs under any folders: one row per model and
attention method (mean ± std over seeds), the published anchors, and the winner against the
seed spread. The same renderer as ``attnlstm-reproduce sst2`` (which also runs the sweeps).

    python scripts/sst2_table.py outputs/reproduce/sst2 <more folders>
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnlstm.compare import find_runs
from attnlstm.console import quiet_on_closed_pipe
from attnlstm.reproduce.tables import TABLES


@quiet_on_closed_pipe
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("roots", type=Path, nargs="+", help="folders holding SST-2 run folders")
    args = parser.parse_args(argv)
    missing = [str(root) for root in args.roots if not root.is_dir()]
    if missing:
        print(f"error: {', '.join(missing)}: not a folder", file=sys.stderr)
        return 2
    runs = [run for root in args.roots for run in find_runs(root)]
    print(TABLES["sst2"].render([r for r in runs if r.config.get("task.name") == "sst2"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
