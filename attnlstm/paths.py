"""Where the package finds its configs and its data."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def config_dir() -> Path:
    """The ``conf/`` folder: inside the package in a wheel, beside it in a checkout."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"attnlstm cannot find its configs: looked for train.yaml in {_PACKAGE_DIR / 'conf'} "
        f"and {_PACKAGE_DIR.parent / 'conf'}; reinstall the package"
    )


def data_dir(configured: str | None = None) -> Path:
    """The datasets folder: the ``data_dir`` config key, else ``$ATTNLSTM_DATA``, else
    ``../shared/data`` beside the checkout (as on the project's machines)."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("ATTNLSTM_DATA"):
        return Path(os.environ["ATTNLSTM_DATA"]).expanduser()
    return _PACKAGE_DIR.parent.parent / "shared" / "data"
