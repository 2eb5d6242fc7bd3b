"""``python -m attnlstm ...`` is ``attnlstm-train ...``."""

from attnlstm.launch import main

if __name__ == "__main__":
    main()
