"""``python -m attnlstm ...`` is ``attnlstm-train ...``."""

import sys

from attnlstm.launch import main

if __name__ == "__main__":
    sys.exit(main())  # None is status 0; 141 when stdout closed early (launch.main's guard)
