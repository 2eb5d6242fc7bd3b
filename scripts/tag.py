#!/usr/bin/env python
"""The command is now ``attnlstm-tag`` (:mod:`attnlstm.cli.tag`), installed with the
package; this script stays so that ``python scripts/tag.py ...`` keeps working."""

import sys

from attnlstm.cli.tag import main

if __name__ == "__main__":
    sys.exit(main())
