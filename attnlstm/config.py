"""The config schema: every valid key, its type and its default.

The dataclasses below are registered in Hydra's ConfigStore; the YAML files under ``conf/``
only pick values. Because every group option starts from one of these schemas, a typo'd key, a
value of the wrong type or a choice outside an enum fails while the config is composed, before
any work, with OmegaConf naming the key (and, for enums, the valid values).

Checks that need more than one key (a model that cannot use the chosen attention, or cannot
solve the chosen task) live in :func:`attnlstm.models.check_compatible` and run at build time.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover

    class StrEnum(str, Enum):
        """str(member) is its value, as 3.11's StrEnum."""

        def __str__(self) -> str:
            return str(self.value)


class AttentionMethod(StrEnum):
    """``attention=`` choices; ``none`` means the model uses no attention."""

    none = "none"
    dot = "dot"
    scaled_dot = "scaled_dot"
    general = "general"
    concat = "concat"
    additive = "additive"
    feedforward = "feedforward"


class SequenceModelName(StrEnum):
    """The sequence-to-value models."""

    lstm = "lstm"
    lstm_attn = "lstm_attn"
    ffattn = "ffattn"
    mean = "mean"


class LanguageModelTaskName(StrEnum):
    """``lm_ptb`` and ``lm_wikitext2`` name a corpus; ``lm`` reads any folder (``task.path``)."""

    lm = "lm"
    lm_ptb = "lm_ptb"
    lm_wikitext2 = "lm_wikitext2"


class TaggingTaskName(StrEnum):
    """``pos_ewt``: UD English EWT; ``pos_toy``: the PyTorch tutorial's two sentences;
    ``pos``: any folder of CoNLL-U files (``task.path``)."""

    pos = "pos"
    pos_ewt = "pos_ewt"
    pos_toy = "pos_toy"


class TagColumn(StrEnum):
    """Which CoNLL-U column is the target: universal (UPOS) or language-specific (XPOS)."""

    upos = "upos"
    xpos = "xpos"


class AuxTagColumn(StrEnum):
    """A second CoNLL-U tag column predicted beside the target, or none."""

    none = "none"
    upos = "upos"
    xpos = "xpos"


class TaggerName(StrEnum):
    tagger = "tagger"


class CharEncoder(StrEnum):
    """How ``model=tagger`` builds a word's character-level features: ``none``; ``lstm``, the
    final states of a character BiLSTM (Plank et al. 2016); ``cnn``, max-pooled convolutions
    over the characters (Ma & Hovy 2016)."""

    none = "none"
    lstm = "lstm"
    cnn = "cnn"


class LanguageModelName(StrEnum):
    lm = "lm"


class Seq2SeqTaskName(StrEnum):
    """``reverse`` and ``sort``: synthetic symbol sequences; ``translation``: sentence pairs
    (English-French by default)."""

    reverse = "reverse"
    sort = "sort"
    translation = "translation"


class TranslationFilter(StrEnum):
    """``tutorial``: PyTorch's translation tutorial's pairs only (both sides under
    ``filter_max_length`` tokens, English starting "i am", "he is", ...); ``none``: every
    pair of the file."""

    none = "none"
    tutorial = "tutorial"


class Language(StrEnum):
    eng = "eng"
    fra = "fra"


class Seq2SeqName(StrEnum):
    seq2seq = "seq2seq"


class AttentionStyle(StrEnum):
    """Where the decoder attends: ``luong`` after its step, with the new state, the context
    combined with it before the softmax; ``bahdanau`` before its step, with the previous
    state, the context fed in beside the input embedding."""

    luong = "luong"
    bahdanau = "bahdanau"


class RecurrentCell(StrEnum):
    lstm = "lstm"
    gru = "gru"


class AttentionValues(StrEnum):
    """What the language model's attention averages over the earlier positions it scores by
    their states: ``state`` the top-layer states themselves; ``next_word`` the embedding of
    the word that followed each of them (a learned cache: contexts like the current one
    retrieve the word that came next there)."""

    state = "state"
    next_word = "next_word"


class Activation(StrEnum):
    none = "none"
    leaky_relu = "leaky_relu"


class PoolingImplementation(StrEnum):
    """How ``ffattn`` and ``mean`` pool over time: ``plain`` autograd, ``chunked`` (through
    time, recomputing in the backward pass; see attnlstm/models/long_pooling.py), or ``auto``
    (chunked where it is supported and the sequences are long)."""

    auto = "auto"
    plain = "plain"
    chunked = "chunked"


class LongMemoryProblem(StrEnum):
    addition = "addition"
    multiplication = "multiplication"


class DeviceType(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class OptimizerName(StrEnum):
    adam = "adam"
    sgd = "sgd"


class WeightAveraging(StrEnum):
    """``nt_asgd``: awd-lstm-lm's non-monotonically triggered averaging. SGD runs as usual until
    the validation loss has not beaten the best of all but the last ``nonmono`` epochs; from
    then on the model is evaluated and tested with the average of the weights after every
    update (ASGD with constant rate, as awd-lstm-lm's ``ASGD(t0=0, lambd=0)``). ``ema``: the
    model is evaluated and tested with an exponential moving average of the weights,
    w_ema <- d * w_ema + (1 - d) * w after every update (d = ``ema_decay``)."""

    none = "none"
    nt_asgd = "nt_asgd"
    ema = "ema"


class SchedulerName(StrEnum):
    none = "none"
    step = "step"
    cosine = "cosine"
    plateau = "plateau"


@dataclass
class LongMemoryTaskConfig:
    """The addition and multiplication problems (Hochreiter & Schmidhuber 1997, section 5.4-5.5),
    generated as Raffel & Ellis (2016) did.

    Fixed-length mode: every sequence has a length drawn uniformly from
    [min_length, ceil(1.1 min_length)) and batches are zero-padded to ceil(1.1 min_length).
    Variable-length mode: each training batch draws one length from [min_length, max_length];
    the fixed sets use ``eval_batch_size``-sequence batches at lengths evenly spaced over it.
    """

    name: LongMemoryProblem = LongMemoryProblem.addition
    min_length: int = 100  # T0
    max_length: int | None = None  # variable-length mode only
    variable_length: bool = False
    batch_size: int = 100
    batches_per_epoch: int = 1000  # an "epoch" is this many updates on fresh sequences
    eval_size: int = 1000  # sequences in the fixed, seeded test (and validation) set
    eval_batch_size: int = 100
    data_seed: int = 1234  # seeds the fixed sets; the training stream follows the run's seed
    separate_validation: bool = False  # False: validate on the test set each epoch, as the paper
    mask_padding: bool = True  # False reproduces the paper's unmasked zero padding exactly
    tolerance: float = 0.04  # a prediction is correct when |error| < tolerance


@dataclass
class LanguageModelTaskConfig:
    """Word-level language modelling on a corpus of ``train``/``valid``/``test`` text files.

    Each line is split on whitespace and ends with ``<eos>``; the vocabulary is the training
    split's words (a word of another split missing from it maps to ``<unk>``). Each split is
    one stream, cut into ``batch_size`` (training) or ``eval_batch_size`` (evaluation) parallel
    rows, read in BPTT segments of ``bptt`` tokens; the hidden state is carried from one segment
    to the next and detached. ``variable_bptt`` draws each training segment's length as
    awd-lstm-lm does: ``bptt`` with probability 0.95 (else bptt / 2), then N(that, 5), at least
    5; its loss is weighted by length / bptt, as awd-lstm-lm rescales its learning rate.
    """

    name: LanguageModelTaskName = LanguageModelTaskName.lm_ptb
    path: str = "ptb"  # folder, relative to the data directory (or absolute)
    train_file: str = "ptb.train.txt"
    valid_file: str = "ptb.valid.txt"
    test_file: str = "ptb.test.txt"
    batch_size: int = 20
    eval_batch_size: int = 10
    bptt: int = 35
    variable_bptt: bool = False
    max_train_tokens: int | None = None  # read only the first N tokens of train (smoke tests)


@dataclass
class TaggingTaskConfig:
    """Part-of-speech tagging of CoNLL-U treebanks (one tag per word).

    ``path`` is the treebank's folder (relative to the data directory, or absolute) holding
    ``train_file``, ``valid_file`` and ``test_file``; ``tag_column`` picks UPOS or XPOS. The
    word vocabulary is the training split's words seen at least ``min_count`` times (others
    map to ``<unk>``), after lowercasing with ``lowercase``; characters always keep their case.
    In training each word is replaced by ``<unk>`` with probability ``word_dropout``, so the
    model learns what to do with words it has not seen (their characters still reach it);
    ``word_dropout_alpha`` > 0 adds Kiperwasser & Goldberg (2016)'s frequency-scaled dropout,
    alpha / (alpha + count(w)), which drops rare words often and frequent ones almost never
    (the two combine as independent events). ``label_smoothing`` smooths the training loss's
    targets (the reported loss is the plain cross-entropy). ``aux_tag_column`` (the other of
    UPOS / XPOS) is predicted by a second classifier on the same states, its cross-entropy
    weighted by ``aux_weight`` in the training loss (multi-task, as UDPipe 2 predicts UPOS,
    XPOS and features jointly); validation and test report its accuracy as ``aux_acc``.
    Sentences are batched ``batch_size`` at a time (``eval_batch_size`` in evaluation), padded,
    with masks; words longer than ``max_word_chars`` keep their first characters.
    """

    name: TaggingTaskName = TaggingTaskName.pos_ewt
    path: str = "ud-english-ewt"
    train_file: str = "en_ewt-ud-train.conllu"
    valid_file: str = "en_ewt-ud-dev.conllu"
    test_file: str = "en_ewt-ud-test.conllu"
    tag_column: TagColumn = TagColumn.upos
    aux_tag_column: AuxTagColumn = AuxTagColumn.none
    aux_weight: float = 1.0
    min_count: int = 1
    lowercase: bool = False
    word_dropout: float = 0.0
    word_dropout_alpha: float = 0.0
    label_smoothing: float = 0.0
    batch_size: int = 32
    eval_batch_size: int = 256
    max_word_chars: int = 30


@dataclass
class Seq2SeqTaskConfig:
    """Sequence-to-sequence tasks.

    ``reverse`` / ``sort``: sources of ``symbols`` symbols with lengths uniform in
    [``min_length``, ``max_length``]; the target is the source reversed / sorted. Each training
    epoch is ``batches_per_epoch`` batches of fresh pairs (seeded by the run's seed and the
    epoch); validation and test are fixed sets of ``eval_size`` pairs (seeded by ``data_seed``).
    At test time the exact match is also reported per source-length bucket, the buckets
    starting at ``length_buckets``.

    ``translation``: the tab-separated ``file`` (English<TAB>French) in ``path``, normalised as
    PyTorch's tutorial does (lowercase ASCII, punctuation split off), filtered by ``filter``,
    translated from ``source_language`` to the other. Source sentences are split
    ``valid_fraction`` / ``test_fraction`` / rest with ``split_seed``, all translations of a
    source staying in one split (they are its references). Vocabularies keep tokens seen
    ``min_count`` times in training.

    Decoding (validation: greedy; test: greedy and, with ``beam_size`` > 1, beam search with
    ``length_penalty``) stops at EOS or ``ceil(max_decode_ratio * S) + max_decode_extra``
    tokens for a source of S tokens. ``solved_exact``: validation exact match at which the
    run counts as solved (and stops, with ``trainer.stop_when_solved``); None never.
    """

    name: Seq2SeqTaskName = Seq2SeqTaskName.reverse
    symbols: int = 20
    min_length: int = 5
    max_length: int = 50
    batches_per_epoch: int = 200
    eval_size: int = 1000
    data_seed: int = 1234
    length_buckets: list[int] = field(default_factory=lambda: [5, 15, 25, 35, 45])
    path: str = "eng-fra"
    file: str = "eng-fra.txt"
    source_language: Language = Language.fra
    filter: TranslationFilter = TranslationFilter.tutorial
    filter_max_length: int = 10
    min_count: int = 1
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 1234
    batch_size: int = 64
    eval_batch_size: int = 256
    beam_size: int = 5
    length_penalty: float = 1.0
    max_decode_ratio: float = 1.5
    max_decode_extra: int = 5
    solved_exact: float | None = None


@dataclass
class Seq2SeqConfig:
    """``model=seq2seq``: an encoder-decoder, with attention of ``attention_style`` unless
    ``attention=none``.

    The encoder is a packed ``cell`` RNN (``bidirectional``: ``hidden_size / 2`` units per
    direction, their final states side by side) of ``num_layers`` layers; the decoder, of the
    same depth and ``hidden_size`` units, starts from the encoder's final state. ``input_feed``
    (Luong only) feeds each step's attentional vector tanh(W_c [c; h]) into the next step.
    ``teacher_forcing``: the probability that a training step reads the gold previous token
    rather than the model's own prediction (1: always gold). ``dropout`` applies to the
    embeddings, between layers and before the output layer.
    """

    name: Seq2SeqName = Seq2SeqName.seq2seq
    embedding_size: int = 128
    hidden_size: int = 256
    num_layers: int = 1
    cell: RecurrentCell = RecurrentCell.lstm
    bidirectional: bool = True
    dropout: float = 0.1
    attention_style: AttentionStyle = AttentionStyle.luong
    input_feed: bool = False
    teacher_forcing: float = 1.0


@dataclass
class TaggerConfig:
    """``model=tagger``: a (Bi)LSTM tagger with optional character features and self-attention.

    Each word is ``word_embedding_size`` word-embedding features, joined (with ``char_encoder``
    ``lstm`` or ``cnn``) by ``2 * char_hidden_size`` character features (the char BiLSTM's
    final states, or ``2 * char_hidden_size`` CNN filters of width ``char_kernel_size`` over
    ``char_embedding_size``-dimensional characters, max-pooled); ``num_layers`` (Bi)LSTM
    layers of ``hidden_size`` units per direction read the sentence. With ``attention=`` other
    than none each word's state attends to every word of its sentence (padding masked) and
    tanh(W [c; h]) replaces h before the per-word classifier. ``dropout`` applies to the word
    features, between LSTM layers and before the classifier.
    """

    name: TaggerName = TaggerName.tagger
    word_embedding_size: int = 100
    char_encoder: CharEncoder = CharEncoder.lstm
    char_embedding_size: int = 30
    char_hidden_size: int = 50
    char_kernel_size: int = 3
    hidden_size: int = 200
    num_layers: int = 2
    bidirectional: bool = True
    dropout: float = 0.33
    # o = h + tanh(W [c; h]) instead of tanh(W [c; h]): the plain tagger's path stays intact
    attention_residual: bool = True


@dataclass
class LanguageModelConfig:
    """``model=lm``: an AWD-LSTM-style stacked LSTM language model (Merity et al. 2018),
    optionally attending to its earlier states.

    Sizes: ``embedding_size`` E, ``hidden_size`` H, ``num_layers`` L. With ``tie_weights`` the
    last layer (or, with attention, the combination layer) outputs E features so the decoder
    can share the embedding matrix.

    Regularisers (0 turns each off): ``dropout_embedding`` drops whole words from the embedding
    matrix; ``dropout_input``, ``dropout_hidden`` (between layers) and ``dropout_output`` are
    locked (variational) dropout, one mask per sequence for all its steps; ``weight_drop`` is
    DropConnect on each layer's hidden-to-hidden matrix; ``ar`` and ``tar`` weigh activation
    regularisation alpha * mean(h_dropped^2) and temporal activation regularisation
    beta * mean((h_t - h_{t-1})^2) on the top layer's output.

    Attention (``attention=`` other than none): the top layer's state at each position attends
    to the ``attention_window`` states before it, reaching into the previous segment, and
    tanh(W [c; h]) replaces h before the decoder. ``attention_values``: the context averages
    the earlier states (``state``) or the embeddings of the words that followed them
    (``next_word``).
    """

    name: LanguageModelName = LanguageModelName.lm
    embedding_size: int = 200
    hidden_size: int = 200
    num_layers: int = 2
    tie_weights: bool = True
    dropout_embedding: float = 0.0
    dropout_input: float = 0.2
    dropout_hidden: float = 0.2
    dropout_output: float = 0.2
    weight_drop: float = 0.0
    ar: float = 0.0
    tar: float = 0.0
    attention_window: int = 35
    # o = h + tanh(W [c; h]) instead of tanh(W [c; h]): the plain model's path stays intact
    attention_residual: bool = False
    attention_values: AttentionValues = AttentionValues.state
    init_range: float = 0.1  # embedding and decoder weights ~ U(-r, r), as the peers


@dataclass
class SequenceModelConfig:
    """Sequence-to-value models: ``lstm``, ``lstm_attn``, ``ffattn`` and ``mean``.

    ``num_layers`` counts LSTM layers (``lstm``, ``lstm_attn``) or per-step dense layers
    (``ffattn``, ``mean``). ``head_size`` is the hidden width of the output MLP.
    """

    name: SequenceModelName = SequenceModelName.lstm_attn
    hidden_size: int = 100
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    head_size: int = 100
    output_activation: Activation = Activation.none
    pooling: PoolingImplementation = PoolingImplementation.auto  # ffattn and mean
    chunk_size: int = 4096  # steps per chunk of the chunked pooling


@dataclass
class AttentionConfig:
    method: AttentionMethod = AttentionMethod.feedforward
    # scorer width for concat / additive (default: key size) and a two-layer feedforward scorer
    # (default: the paper's single layer)
    hidden_dim: int | None = None


@dataclass
class DeviceConfig:
    type: DeviceType = DeviceType.auto
    index: int = 0


@dataclass
class OptimConfig:
    name: OptimizerName = OptimizerName.adam
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam
    momentum: float = 0.0  # sgd
    nesterov: bool = False  # sgd
    weight_decay: float = 0.0
    scheduler: SchedulerName = SchedulerName.none
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.5  # step and plateau: decay factor
    patience: int = 2  # plateau: epochs without improvement before decaying
    min_lr: float = 0.0  # cosine and plateau
    averaging: WeightAveraging = WeightAveraging.none
    nonmono: int = 5  # nt_asgd: epochs of the non-monotone trigger
    ema_decay: float = 0.999  # ema: the average's decay per update


@dataclass
class TrainerConfig:
    max_epochs: int = 100
    grad_clip: float | None = None  # clip the global gradient norm to this value
    early_stopping_patience: int | None = None  # epochs without a better validation monitor
    stop_when_solved: bool = True  # stop once the task says it is solved (e.g. 100% accuracy)
    log_every_n_steps: int = 1  # train/loss, train/lr, train/grad_norm
    progress_bar: bool = True  # shown only when the output is a terminal
    attention_images: int = 4  # validation examples whose attention weights are logged
    limit_train_batches: int | None = None  # end each epoch after this many updates (trials)


@dataclass
class TrainConfig:
    """The root config (``conf/train.yaml``)."""

    task: Any = MISSING
    model: Any = MISSING
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0
    resume: str | None = None  # a run directory to continue
    data_dir: str | None = None  # datasets (default: $ATTNLSTM_DATA)


#: The schema each config group's options start from. They live in the ConfigStore under
#: ``schema/<group>`` (out of the way of the group's own option list) and an option's YAML
#: begins with ``defaults: [/schema/<group>@_here_: <name>]``.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "task": {
        "long_memory": LongMemoryTaskConfig,
        "language_model": LanguageModelTaskConfig,
        "tagging": TaggingTaskConfig,
        "seq2seq": Seq2SeqTaskConfig,
    },
    "model": {
        "sequence": SequenceModelConfig,
        "language_model": LanguageModelConfig,
        "tagger": TaggerConfig,
        "seq2seq": Seq2SeqConfig,
    },
    "attention": {"attention": AttentionConfig},
    "device": {"device": DeviceConfig},
    "trainer": {"trainer": TrainerConfig},
    "optim": {"optim": OptimConfig},
}


def register_configs() -> None:
    """Register the root schema and the group schemas in Hydra's ConfigStore."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for group, schemas in GROUP_SCHEMAS.items():
        for name, node in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=node)
