"""attnlstm: recurrent networks with attention, and a Hydra experiment runner to train them."""

from attnlstm.attention import ATTENTION_METHODS, Attention, make_attention

__all__ = ["ATTENTION_METHODS", "Attention", "__version__", "make_attention"]
__version__ = "0.1.0"
