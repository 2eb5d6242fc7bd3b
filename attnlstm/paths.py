"""Where the package finds its configs and its data."""

from __future__ import annotations

import os
from pathlib import Path

import platformdirs

_PACKAGE_DIR = Path(__file__).resolve().parent

#: how :func:`data_dir` chooses, in words (for help texts and error messages)
DATA_DIR_RULE = (
    "the data_dir= config key, else $ATTNLSTM_DATA, else ../shared/data beside a source"
    " checkout, else the per-user data folder"
)


def config_dir() -> Path:
    """The ``conf/`` folder: inside the package in a wheel, beside it in a checkout."""
    for candidate in (_PACKAGE_DIR / "conf", _PACKAGE_DIR.parent / "conf"):
        if (candidate / "train.yaml").is_file():
            return candidate
    raise FileNotFoundError(
        f"attnlstm cannot find its configs: looked for train.yaml in {_PACKAGE_DIR / 'conf'} "
        f"and {_PACKAGE_DIR.parent / 'conf'}; reinstall the package"
    )


def checkout_data_dir() -> Path | None:
    """``../shared/data`` beside a source checkout (as on the project's machines), or None.

    Only a checkout counts: the package folder's parent holds ``pyproject.toml`` and the
    folder exists. An installed wheel sits in ``site-packages``, where ``../shared/data``
    would be a folder inside the virtual environment; it never gets that fallback."""
    checkout = _PACKAGE_DIR.parent
    shared = checkout.parent / "shared" / "data"
    if (checkout / "pyproject.toml").is_file() and shared.is_dir():
        return shared
    return None


def user_data_dir() -> Path:
    """The per-user data folder, ``<platformdirs.user_data_dir("attnlstm")>/data``:
    ``~/.local/share/attnlstm/data`` on Linux (``$XDG_DATA_HOME`` is honoured),
    ``~/Library/Application Support/attnlstm/data`` on macOS, ``%LOCALAPPDATA%\\attnlstm\\data``
    on Windows. A data folder, not a cache folder: the datasets are fetched once, on request,
    and no cache cleaner should remove them under a user's runs."""
    return Path(platformdirs.user_data_dir("attnlstm", appauthor=False)) / "data"


def data_dir_origin(configured: str | None = None) -> str:
    """Where :func:`data_dir` took its answer from, in words: ``data_dir=``,
    ``$ATTNLSTM_DATA``, ``the checkout's ../shared/data`` or ``the per-user data folder``."""
    if configured:
        return "data_dir="
    if os.environ.get("ATTNLSTM_DATA"):
        return "$ATTNLSTM_DATA"
    if checkout_data_dir() is not None:
        return "the checkout's ../shared/data"
    return "the per-user data folder"


def data_dir(configured: str | None = None) -> Path:
    """The datasets folder: the ``data_dir`` config key, else ``$ATTNLSTM_DATA``, else
    ``../shared/data`` beside a source checkout where that folder exists, else the per-user
    data folder (:func:`user_data_dir`), where ``attnlstm-download`` writes by default."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("ATTNLSTM_DATA"):
        return Path(os.environ["ATTNLSTM_DATA"]).expanduser()
    return checkout_data_dir() or user_data_dir()
