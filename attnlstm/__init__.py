"""attnlstm: recurrent networks with attention, and a Hydra experiment runner to train them.

``attnlstm.load_run(path)`` rebuilds a trained run's model from its folder (see
:mod:`attnlstm.runs`); the attention library is :mod:`attnlstm.attention`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from attnlstm.attention import ATTENTION, ATTENTION_METHODS, Attention, make_attention
    from attnlstm.runs import load_run

__all__ = [
    "ATTENTION",
    "ATTENTION_METHODS",
    "Attention",
    "__version__",
    "load_run",
    "make_attention",
]
__version__ = "0.1.0"

#: the names above, each imported from its module on first use: importing the package (and so
#: any ``attnlstm.*`` module, such as the light ``attnlstm.launch``) does not import torch
_LAZY = {
    "ATTENTION": "attnlstm.attention",
    "ATTENTION_METHODS": "attnlstm.attention",
    "Attention": "attnlstm.attention",
    "make_attention": "attnlstm.attention",
    "load_run": "attnlstm.runs",  # every model family
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'attnlstm' has no attribute {name!r}")
