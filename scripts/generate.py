#!/usr/bin/env python
"""The command is now ``attnlstm-generate`` (:mod:`attnlstm.cli.generate`), installed with the
package; this script stays so that ``python scripts/generate.py ...`` keeps working."""

import sys

from attnlstm.cli.generate import main

if __name__ == "__main__":
    sys.exit(main())
