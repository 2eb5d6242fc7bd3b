#!/usr/bin/env python
"""Compare the runs under a folder: same as ``attnlstm-compare`` (see ``--help``)."""

from attnlstm.compare import main

if __name__ == "__main__":
    raise SystemExit(main())
