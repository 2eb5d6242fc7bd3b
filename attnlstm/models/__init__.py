"""Models: one module per family. ``build_model`` turns the config into a module, after
``check_compatible`` has made sure the model, the attention and the task fit together."""

from __future__ import annotations

from omegaconf import DictConfig
from torch import nn

from attnlstm.attention import Attention, make_attention
from attnlstm.errors import ConfigError
from attnlstm.models.common import ModelOutput
from attnlstm.models.ffattn import FeedForwardPooling
from attnlstm.models.language_model import LSTMLanguageModel
from attnlstm.models.lstm import LSTMPooling
from attnlstm.models.seq2seq import Seq2Seq
from attnlstm.models.tagger import BiLSTMTagger, CharCNNEncoder, CharLSTMEncoder
from attnlstm.tasks.base import TaskSpec

__all__ = [
    "MODEL_FAMILIES",
    "ModelOutput",
    "build_language_model",
    "build_model",
    "build_seq2seq",
    "build_tagger",
    "check_compatible",
]

#: model name -> (what it predicts, which attention it takes: "none", "any", "query_free",
#: "optional")
MODEL_FAMILIES: dict[str, tuple[str, str]] = {
    "lstm": ("value", "none"),
    "lstm_attn": ("value", "any"),
    "ffattn": ("value", "query_free"),
    "mean": ("value", "none"),
    "lm": ("tokens", "optional"),
    "tagger": ("tags", "optional"),
    "seq2seq": ("sequence", "optional"),
}
_TARGET_WORDS = {
    "value": "one value per sequence",
    "tokens": "the next word at every position",
    "tags": "a tag for every word",
    "sequence": "an output sequence for each input sequence",
}


def check_compatible(model_cfg: DictConfig, attention_method: str, spec: TaskSpec) -> None:
    """Raise :class:`ConfigError` with a plain sentence if the model cannot run as configured."""
    name = str(model_cfg.name)
    if name not in MODEL_FAMILIES:
        raise ConfigError(f"unknown model {name!r}; choose one of {sorted(MODEL_FAMILIES)}")
    predicts, takes = MODEL_FAMILIES[name]
    if spec.target != predicts:
        fitting = sorted(m for m, (p, _) in MODEL_FAMILIES.items() if p == spec.target)
        raise ConfigError(
            f"model={name} predicts {_TARGET_WORDS.get(predicts, predicts)}, but this task needs"
            f" {_TARGET_WORDS.get(spec.target, spec.target)}; models that fit it:"
            f" {', '.join(fitting) or 'none yet'}"
        )
    if takes == "none" and attention_method != "none":
        raise ConfigError(
            f"model={name} uses no attention, but attention={attention_method} was chosen; use"
            f" model=lstm_attn to pool LSTM states with {attention_method} attention, or drop the"
            " attention override"
        )
    if takes == "any" and attention_method == "none":
        raise ConfigError(
            f"model={name} pools its states with attention, but attention=none was chosen; pick"
            " an attention method (e.g. attention=dot) or use model=lstm for no attention"
        )
    if takes == "query_free" and attention_method != "feedforward":
        raise ConfigError(
            f"model={name} has no query to attend with, so it needs attention=feedforward (got"
            f" attention={attention_method}); use model=lstm_attn for query-based attention"
        )
    if name == "lm":
        _check_language_model(model_cfg)
        return
    if name == "tagger":
        _check_tagger(model_cfg)
        return
    if name == "seq2seq":
        _check_seq2seq(model_cfg, attention_method)
        return
    if name in ("ffattn", "mean") and model_cfg.bidirectional:
        raise ConfigError(f"model={name} has no recurrence, so model.bidirectional must be false")
    for key in ("hidden_size", "num_layers", "head_size"):
        if model_cfg[key] <= 0:
            raise ConfigError(f"model.{key} must be positive, got {model_cfg[key]}")
    if model_cfg.get("chunk_size", 1) <= 0:
        raise ConfigError(f"model.chunk_size must be positive, got {model_cfg.chunk_size}")
    if str(model_cfg.get("pooling", "auto")) == "chunked" and (
        name not in ("ffattn", "mean") or model_cfg.num_layers != 1 or model_cfg.dropout > 0
    ):
        raise ConfigError(
            "model.pooling=chunked applies to ffattn and mean with one dense layer and no"
            " dropout; use model.pooling=auto or plain"
        )
    if not 0.0 <= model_cfg.dropout < 1.0:
        raise ConfigError(f"model.dropout must lie in [0, 1), got {model_cfg.dropout}")


def _check_language_model(model_cfg: DictConfig) -> None:
    for key in ("embedding_size", "hidden_size", "num_layers", "attention_window"):
        if model_cfg[key] <= 0:
            raise ConfigError(f"model.{key} must be positive, got {model_cfg[key]}")
    for key in (
        "dropout_embedding",
        "dropout_input",
        "dropout_hidden",
        "dropout_output",
        "weight_drop",
    ):
        if not 0.0 <= model_cfg[key] < 1.0:
            raise ConfigError(f"model.{key} must lie in [0, 1), got {model_cfg[key]}")
    for key in ("ar", "tar"):
        if model_cfg[key] < 0:
            raise ConfigError(f"model.{key} must not be negative, got {model_cfg[key]}")


def _check_tagger(model_cfg: DictConfig) -> None:
    keys = ["word_embedding_size", "hidden_size", "num_layers"]
    if str(model_cfg.char_encoder) != "none":
        keys += ["char_embedding_size", "char_hidden_size", "char_kernel_size"]
    for key in keys:
        if model_cfg[key] <= 0:
            raise ConfigError(f"model.{key} must be positive, got {model_cfg[key]}")
    if str(model_cfg.char_encoder) == "cnn" and model_cfg.char_kernel_size % 2 == 0:
        raise ConfigError(
            "model.char_kernel_size must be odd (centred windows), got"
            f" {model_cfg.char_kernel_size}"
        )
    if not 0.0 <= model_cfg.dropout < 1.0:
        raise ConfigError(f"model.dropout must lie in [0, 1), got {model_cfg.dropout}")


def configured_attention(
    attention_cfg: DictConfig, query_dim: int | None, key_dim: int
) -> Attention | None:
    """The ``attention=`` method between query_dim and key_dim vectors; None for ``none``."""
    method = str(attention_cfg.method)
    if method == "none":
        return None
    return make_attention(method, query_dim, key_dim, attention_cfg.hidden_dim)


def _check_seq2seq(model_cfg: DictConfig, attention_method: str) -> None:
    for key in ("embedding_size", "hidden_size", "num_layers"):
        if model_cfg[key] <= 0:
            raise ConfigError(f"model.{key} must be positive, got {model_cfg[key]}")
    if model_cfg.bidirectional and model_cfg.hidden_size % 2:
        raise ConfigError(
            "a bidirectional encoder splits model.hidden_size between its two directions, so it"
            f" must be even, got {model_cfg.hidden_size}"
        )
    if not 0.0 <= model_cfg.dropout < 1.0:
        raise ConfigError(f"model.dropout must lie in [0, 1), got {model_cfg.dropout}")
    if not 0.0 <= model_cfg.teacher_forcing <= 1.0:
        raise ConfigError(
            f"model.teacher_forcing must lie in [0, 1], got {model_cfg.teacher_forcing}"
        )
    if model_cfg.input_feed and str(model_cfg.attention_style) == "bahdanau":
        raise ConfigError(
            "model.input_feed is Luong's (the attentional vector fed to the next step);"
            " Bahdanau attention already feeds the context in: use"
            " model.attention_style=luong or model.input_feed=false"
        )
    if model_cfg.input_feed and attention_method == "none":
        raise ConfigError("model.input_feed feeds the attentional vector: it needs attention")


def build_seq2seq(model_cfg: DictConfig, attention_cfg: DictConfig, spec: TaskSpec) -> Seq2Seq:
    """``model=seq2seq`` for ``spec.input_size`` source and ``spec.output_size`` target
    tokens; the attention compares decoder states with encoder states (both hidden_size)."""
    size = model_cfg.hidden_size
    attention = configured_attention(attention_cfg, size, size)
    return Seq2Seq(
        spec.input_size,
        spec.output_size,
        embedding_size=model_cfg.embedding_size,
        hidden_size=size,
        num_layers=model_cfg.num_layers,
        cell=str(model_cfg.cell),
        bidirectional=model_cfg.bidirectional,
        dropout=model_cfg.dropout,
        attention=attention,
        attention_style=str(model_cfg.attention_style),
        input_feed=model_cfg.input_feed,
        teacher_forcing=model_cfg.teacher_forcing,
    )


def build_tagger(model_cfg: DictConfig, attention_cfg: DictConfig, spec: TaskSpec) -> BiLSTMTagger:
    """``model=tagger`` for a task with ``spec.input_size`` words, ``spec.output_size`` tags and
    ``spec.char_vocab_size`` characters."""
    encoder_name = str(model_cfg.char_encoder)
    char_encoder: nn.Module | None = None
    if encoder_name == "lstm":
        char_encoder = CharLSTMEncoder(
            spec.char_vocab_size, model_cfg.char_embedding_size, model_cfg.char_hidden_size
        )
    elif encoder_name == "cnn":
        char_encoder = CharCNNEncoder(
            spec.char_vocab_size,
            model_cfg.char_embedding_size,
            2 * model_cfg.char_hidden_size,
            model_cfg.char_kernel_size,
        )
    state_size = model_cfg.hidden_size * (2 if model_cfg.bidirectional else 1)
    attention = configured_attention(attention_cfg, state_size, state_size)
    return BiLSTMTagger(
        spec.input_size,
        spec.output_size,
        model_cfg.word_embedding_size,
        char_encoder,
        model_cfg.hidden_size,
        model_cfg.num_layers,
        model_cfg.bidirectional,
        model_cfg.dropout,
        attention,
        residual=model_cfg.attention_residual,
        aux_tags=spec.aux_output_size,
    )


def build_language_model(
    model_cfg: DictConfig, attention_cfg: DictConfig, vocab_size: int
) -> LSTMLanguageModel:
    """``model=lm`` over a vocabulary of ``vocab_size`` words."""
    method = str(attention_cfg.method)
    top_size = (
        model_cfg.embedding_size
        if model_cfg.tie_weights and method == "none"
        else model_cfg.hidden_size
    )
    attention = configured_attention(attention_cfg, top_size, top_size)
    return LSTMLanguageModel(
        vocab_size,
        model_cfg.embedding_size,
        model_cfg.hidden_size,
        model_cfg.num_layers,
        tie_weights=model_cfg.tie_weights,
        dropout_embedding=model_cfg.dropout_embedding,
        dropout_input=model_cfg.dropout_input,
        dropout_hidden=model_cfg.dropout_hidden,
        dropout_output=model_cfg.dropout_output,
        weight_drop=model_cfg.weight_drop,
        ar=model_cfg.ar,
        tar=model_cfg.tar,
        attention=attention,
        attention_window=model_cfg.attention_window,
        init_range=model_cfg.init_range,
        residual=model_cfg.get("attention_residual", False),
        next_word_values=str(model_cfg.get("attention_values", "state")) == "next_word",
    )


def build_model(model_cfg: DictConfig, attention_cfg: DictConfig, spec: TaskSpec) -> nn.Module:
    """The model named by ``model_cfg.name`` for a task of shape ``spec``."""
    method = str(attention_cfg.method)
    check_compatible(model_cfg, method, spec)
    name = str(model_cfg.name)
    if name == "lm":
        return build_language_model(model_cfg, attention_cfg, spec.input_size)
    if name == "tagger":
        return build_tagger(model_cfg, attention_cfg, spec)
    if name == "seq2seq":
        return build_seq2seq(model_cfg, attention_cfg, spec)
    activation = str(model_cfg.output_activation)
    if name in ("lstm", "lstm_attn"):
        state_size = model_cfg.hidden_size * (2 if model_cfg.bidirectional else 1)
        # check_compatible has made sure lstm comes with attention=none, lstm_attn without
        attention = configured_attention(attention_cfg, state_size, state_size)
        return LSTMPooling(
            spec.input_size,
            spec.output_size,
            model_cfg.hidden_size,
            model_cfg.num_layers,
            model_cfg.bidirectional,
            model_cfg.dropout,
            model_cfg.head_size,
            activation,
            attention,
        )
    attention = configured_attention(attention_cfg, None, model_cfg.hidden_size)
    return FeedForwardPooling(
        spec.input_size,
        spec.output_size,
        model_cfg.hidden_size,
        model_cfg.num_layers,
        model_cfg.dropout,
        model_cfg.head_size,
        activation,
        attention,
        pooling=str(model_cfg.get("pooling", "auto")),
        chunk_size=int(model_cfg.get("chunk_size", 4096)),
    )
