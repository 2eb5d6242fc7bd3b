#!/usr/bin/env python
"""The command is now ``attnlstm-translate`` (:mod:`attnlstm.cli.translate`), installed with the
package; this script stays so that ``python scripts/translate.py ...`` keeps working."""

import sys

from attnlstm.cli.translate import main

if __name__ == "__main__":
    sys.exit(main())
