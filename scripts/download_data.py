"""Download the public datasets (sha256-checked) into a data directory.

    python scripts/download_data.py ptb wikitext-2 --dest ~/data/attnlstm
    python scripts/download_data.py all            # into $ATTNLSTM_DATA

Also installed as ``attnlstm-download``. See attnlstm/data/download.py for the sources.
"""

import sys

from attnlstm.data.download import main

if __name__ == "__main__":
    sys.exit(main())
