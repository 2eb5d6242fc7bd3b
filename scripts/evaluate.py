#!/usr/bin/env python
"""The command is now ``attnlstm-evaluate`` (:mod:`attnlstm.cli.evaluate`), installed with the
package; this script stays so that ``python scripts/evaluate.py ...`` keeps working."""

import sys

from attnlstm.cli.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
