"""attnlstm: recurrent networks with attention, and a Hydra experiment runner to train them.

``attnlstm.load_run(path)`` rebuilds a trained run's model from its folder (see
:mod:`attnlstm.runs`); the attention library is :mod:`attnlstm.attention`.
"""

from typing import Any

from attnlstm.attention import ATTENTION, ATTENTION_METHODS, Attention, make_attention

__all__ = [
    "ATTENTION",
    "ATTENTION_METHODS",
    "Attention",
    "__version__",
    "load_run",
    "make_attention",
]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # load_run pulls in every model family; imported on first use only
    if name == "load_run":
        from attnlstm.runs import load_run

        return load_run
    raise AttributeError(f"module 'attnlstm' has no attribute {name!r}")
