"""``python -m attnlstm ...`` is ``attnlstm-train ...``."""

from attnlstm.train import main

if __name__ == "__main__":
    main()
