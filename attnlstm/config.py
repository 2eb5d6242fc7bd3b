"""The config schema: every valid key, its type and its default.

The dataclasses below are registered in Hydra's ConfigStore; the YAML files under ``conf/``
only pick values. Because every group option starts from one of these schemas, a typo'd key, a
value of the wrong type or a choice outside an enum fails while the config is composed, before
any work, with OmegaConf naming the key (and, for enums, the valid values).

Every schema checks the ranges of its own keys in ``__post_init__``, which runs in
:func:`validate` when the composed config becomes typed objects, before any data is read. Checks
across groups (a model that cannot use the chosen attention, or cannot solve the chosen task)
read the registries' capabilities in :func:`attnlstm.models.check_compatible`, also before any
data is read.
"""

from __future__ import annotations

import dataclasses
import math
import sys
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, ClassVar, TypeVar

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf

from attnlstm.errors import ConfigError

T = TypeVar("T")

if sys.version_info >= (3, 11):
    from enum import StrEnum
else:  # pragma: no cover

    class StrEnum(str, Enum):
        """str(member) is its value, as 3.11's StrEnum."""

        def __str__(self) -> str:
            return str(self.value)


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


class CharEncoder(StrEnum):
    """How ``model=tagger`` builds a word's character-level features: ``none``; ``lstm``, the
    final states of a character BiLSTM (Plank et al. 2016); ``cnn``, max-pooled convolutions
    over the characters (Ma & Hovy 2016)."""

    none = "none"
    lstm = "lstm"
    cnn = "cnn"


class SyntheticSeq2SeqProblem(StrEnum):
    """``reverse`` and ``sort``: the target is the source reversed / sorted."""

    reverse = "reverse"
    sort = "sort"


class TranslationTaskName(StrEnum):
    """``translation`` (``task=translation`` and ``task=translation_full`` both)."""

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


class VocabOrder(StrEnum):
    """How a language model's vocabulary numbers its words: ``first_seen`` in order of first
    appearance in the training text (the ids of every run before this option);
    ``frequency`` most frequent first (ties by first appearance), which an adaptive softmax
    needs (its head holds the ids below its first cut-off); ``auto`` is ``frequency`` for
    ``model.decoder=adaptive`` and ``first_seen`` otherwise, decided when the run starts."""

    auto = "auto"
    first_seen = "first_seen"
    frequency = "frequency"


class Activation(StrEnum):
    none = "none"
    leaky_relu = "leaky_relu"


class PoolingImplementation(StrEnum):
    """How ``ffattn`` and ``mean`` pool over time: ``plain`` autograd, ``chunked`` (through
    time, recomputing in the backward pass; see attnlstm/models/long_pooling.py), ``fused``
    (the same in one compiled CPU kernel, attnlstm/models/fused_pool.py), or ``auto`` (on long
    sequences, fused where the kernel builds and the input is a float32 CPU tensor, else
    chunked)."""

    auto = "auto"
    plain = "plain"
    chunked = "chunked"
    fused = "fused"


class LongMemoryProblem(StrEnum):
    addition = "addition"
    multiplication = "multiplication"


class SecondMarker(StrEnum):
    """How the addition and multiplication problems draw the second marked step N2 (N1 is
    always uniform over 1..9). Both rules are revisions of Raffel & Ellis's ``lstm_problems``.

    - ``padded_half`` (commit f791f10, 18 Aug 2015, the code of the paper's experiments):
      N2 uniform over ``range(1, int(T/2 - 1))`` with T the *padded* length, plus 1 where it
      equals N1; so N2 may lie past the middle of a sequence shorter than T.
    - ``own_half`` (commit a41c5f2, 13 Aug 2015, the first revision): N2 uniform over
      ``range(1, N1) + range(N1 + 1, int(L/2 - 1))`` with L the sequence's *own* length.
    """

    padded_half = "padded_half"
    own_half = "own_half"


class DeviceType(StrEnum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class OptimizerName(StrEnum):
    """``adam`` (L2 weight decay added to the gradient), ``adamw`` (decoupled weight decay,
    Loshchilov & Hutter 2019), ``sgd``."""

    adam = "adam"
    adamw = "adamw"
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


# -- range checks -------------------------------------------------------------------------
# Each schema checks its own keys in __post_init__, which runs when the composed config becomes
# typed objects (``validate``), before any data is read or any folder is written. A failure is
# one ConfigError naming the key, the bad value and what is allowed.


def _show(value: Any) -> str:
    """``value`` as it would be written on the command line: ``null``, ``true``, ``-1`` (not
    ``-1.0``: OmegaConf turned the ``-1`` the user typed into a float), ``[2,0.999]``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)
    if isinstance(value, list | tuple):
        return "[" + ",".join(_show(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(f"{k}:{_show(v)}" for k, v in value.items()) + "}"
    return str(value)


def _fail(key: str, value: Any, allowed: str) -> None:
    raise ConfigError(f"{key}={_show(value)} is not allowed: {allowed}")


def _positive(node: Any, group: str, *keys: str) -> None:
    for key in keys:
        value = getattr(node, key)
        if value is None or not 0 < value < math.inf:
            _fail(f"{group}.{key}", value, "it must be positive (and finite)")


def _positive_or_none(node: Any, group: str, *keys: str, none_means: str) -> None:
    for key in keys:
        value = getattr(node, key)
        if value is not None and not value > 0:
            _fail(f"{group}.{key}", value, f"it must be positive, or null ({none_means})")


def _non_negative(node: Any, group: str, *keys: str) -> None:
    for key in keys:
        value = getattr(node, key)
        if not value >= 0:
            _fail(f"{group}.{key}", value, "it must be >= 0")


def _probability(node: Any, group: str, *keys: str, closed: bool = False) -> None:
    """Each key in [0, 1) (``closed``: [0, 1])."""
    for key in keys:
        value = getattr(node, key)
        if not (0.0 <= value <= 1.0 if closed else 0.0 <= value < 1.0):
            _fail(f"{group}.{key}", value, f"it must lie in [0, 1{']' if closed else ')'}")


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
    # how N2 is drawn: padded_half (the paper's code, default) or own_half (its first
    # revision); see SecondMarker
    second_marker: SecondMarker = SecondMarker.padded_half

    #: the two markers need at least this many steps (see tasks/long_memory.py)
    MIN_LENGTH: ClassVar[int] = 11
    #: runs saved before ``second_marker`` existed drew N2 by the first revision's rule
    BEFORE_THE_KEY: ClassVar[dict[str, Any]] = {"second_marker": SecondMarker.own_half}

    def __post_init__(self) -> None:
        if self.min_length < self.MIN_LENGTH:
            _fail(
                "task.min_length",
                self.min_length,
                f"the markers need sequences of at least {self.MIN_LENGTH} steps",
            )
        if self.max_length is not None and not self.variable_length:
            _fail(
                "task.max_length",
                self.max_length,
                "it applies to the variable-length mode; set task.variable_length=true or drop"
                " task.max_length (fixed-length sequences have lengths in [T0, 1.1 T0))",
            )
        if self.max_length is not None and self.max_length < self.min_length:
            _fail(
                "task.max_length",
                self.max_length,
                f"it must be >= task.min_length={self.min_length}",
            )
        _positive(self, "task", "batch_size", "batches_per_epoch", "eval_size", "eval_batch_size")
        if self.eval_size % self.eval_batch_size:
            _fail(
                "task.eval_size",
                self.eval_size,
                f"it must be a multiple of task.eval_batch_size={self.eval_batch_size}",
            )
        _positive(self, "task", "tolerance")


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
    ``name`` only labels the run (``lm_ptb``, ``lm_wikitext2``, ``lm``). ``vocab_order``: see
    :class:`VocabOrder`.
    """

    name: str = "lm_ptb"
    path: str = MISSING  # folder, relative to the data directory (or absolute); required
    train_file: str = "ptb.train.txt"
    valid_file: str = "ptb.valid.txt"
    test_file: str = "ptb.test.txt"
    batch_size: int = 20
    eval_batch_size: int = 10
    bptt: int = 35
    variable_bptt: bool = False
    max_train_tokens: int | None = None  # read only the first N tokens of train (smoke tests)
    vocab_order: VocabOrder = VocabOrder.auto

    def __post_init__(self) -> None:
        _positive(self, "task", "batch_size", "eval_batch_size", "bptt")
        _positive_or_none(self, "task", "max_train_tokens", none_means="the whole split")


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

    def __post_init__(self) -> None:
        _positive(self, "task", "batch_size", "eval_batch_size", "min_count", "max_word_chars")
        _probability(self, "task", "word_dropout", "label_smoothing")
        _non_negative(self, "task", "word_dropout_alpha", "aux_weight")
        aux = str(self.aux_tag_column)
        if aux == str(self.tag_column):
            _fail(
                "task.aux_tag_column",
                aux,
                "it is the target column itself; pick the other column or none",
            )
        if str(self.name) == "pos_toy" and aux != "none":
            _fail("task.aux_tag_column", aux, "task=pos_toy has one tag column; use none")


@dataclass
class Seq2SeqTaskConfig:
    """What every sequence-to-sequence task shares: batching, decoding and the solved mark.

    Decoding (validation: greedy; test: greedy and, with ``beam_size`` > 1, beam search with
    ``length_penalty``) stops at EOS or ``ceil(max_decode_ratio * S) + max_decode_extra``
    tokens for a source of S tokens. ``solved_exact``: validation exact match at which the
    run counts as solved (and stops, with ``trainer.stop_when_solved``); None never.
    """

    batch_size: int = 64
    eval_batch_size: int = 256
    beam_size: int = 5
    length_penalty: float = 1.0
    max_decode_ratio: float = 1.5
    max_decode_extra: int = 5
    solved_exact: float | None = None

    def __post_init__(self) -> None:
        _positive(self, "task", "batch_size", "eval_batch_size", "beam_size", "max_decode_ratio")
        _non_negative(self, "task", "max_decode_extra", "length_penalty")
        if self.solved_exact is not None and not 0.0 < self.solved_exact <= 1.0:
            _fail("task.solved_exact", self.solved_exact, "it must lie in (0, 1], or be null")


@dataclass
class SyntheticSeq2SeqTaskConfig(Seq2SeqTaskConfig):
    """``reverse`` / ``sort``: sources of ``symbols`` symbols with lengths uniform in
    [``min_length``, ``max_length``]; the target is the source reversed / sorted. Each training
    epoch is ``batches_per_epoch`` batches of fresh pairs (seeded by the run's seed and the
    epoch); validation and test are fixed sets of ``eval_size`` pairs (seeded by ``data_seed``).
    At test time the exact match is also reported per source-length bucket, the buckets
    starting at ``length_buckets``.
    """

    name: SyntheticSeq2SeqProblem = SyntheticSeq2SeqProblem.reverse
    symbols: int = 20
    min_length: int = 5
    max_length: int = 50
    batches_per_epoch: int = 200
    eval_size: int = 1000
    data_seed: int = 1234
    length_buckets: list[int] = field(default_factory=lambda: [5, 15, 25, 35, 45])

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "task", "symbols", "min_length", "batches_per_epoch", "eval_size")
        if self.max_length < self.min_length:
            _fail(
                "task.max_length",
                self.max_length,
                f"it must be >= task.min_length={self.min_length}",
            )


@dataclass
class TranslationTaskConfig(Seq2SeqTaskConfig):
    """``translation``: the tab-separated ``file`` (English<TAB>French) in ``path``, normalised
    as PyTorch's tutorial does (lowercase ASCII, punctuation split off), filtered by ``filter``,
    translated from ``source_language`` to the other. Source sentences are split
    ``valid_fraction`` / ``test_fraction`` / rest with ``split_seed``, all translations of a
    source staying in one split (they are its references). Vocabularies keep tokens seen
    ``min_count`` times in training.
    """

    name: TranslationTaskName = TranslationTaskName.translation
    path: str = "eng-fra"
    file: str = "eng-fra.txt"
    source_language: Language = Language.fra
    filter: TranslationFilter = TranslationFilter.tutorial
    filter_max_length: int = 10
    min_count: int = 1
    valid_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 1234

    def __post_init__(self) -> None:
        super().__post_init__()
        _positive(self, "task", "filter_max_length", "min_count")
        for key in ("valid_fraction", "test_fraction"):
            value = getattr(self, key)
            if not 0.0 < value < 1.0:
                _fail(f"task.{key}", value, "it must lie in (0, 1)")
        if self.valid_fraction + self.test_fraction >= 1.0:
            _fail(
                "task.test_fraction",
                self.test_fraction,
                f"task.valid_fraction + task.test_fraction must be below 1 (valid_fraction is"
                f" {self.valid_fraction})",
            )


@dataclass
class TextClassificationTaskConfig:
    """Text classification: one label per text, from TSV/CSV files (``task=sst2``,
    ``task=text_classification`` for any folder).

    ``path`` (relative to the data directory, or absolute) holds ``train_file``, ``valid_file``
    and ``test_file``; each row gives a label in ``label_column`` and a text in
    ``text_column``, each a header name or a position (``"0"``, ``"1"``); ``header`` says
    whether the first row names the columns; ``delimiter`` null means a comma for ``.csv``
    files and a tab otherwise. Texts are split on whitespace (``lowercase`` first, if set;
    ``unescape_ptb`` writes the Penn Treebank's escapes ``-lrb-``, ``-rrb-``, ``\\/`` ... as
    the characters they stand for, as SST-2's dev and test files use them and its train file
    does not);
    the vocabulary is the training texts' tokens seen ``min_count`` times (others are
    ``<unk>``); texts longer than ``max_tokens`` keep their first tokens. The classes are the
    training labels, sorted. In training each token becomes ``<unk>`` with probability
    ``word_dropout``, and the loss's targets are smoothed by ``label_smoothing`` (the
    reported loss is the plain cross-entropy). Batches of ``batch_size`` texts
    (``eval_batch_size`` in evaluation) are padded, with lengths, drawn from pools sorted by
    length. Metrics: loss, accuracy and the
    macro-averaged F1 over the classes. ``name`` only labels the run.

    ``subword_buckets`` > 0 adds subword features (fastText's, Bojanowski et al. 2017): each
    token also carries the ids of its character n-grams of ``subword_min_n`` to
    ``subword_max_n`` characters (the word written ``<word>``), hashed into that many buckets,
    so a word unknown to the training vocabulary still reads as its parts. Word dropout
    replaces the word id only; its n-grams stay.
    """

    name: str = "text_classification"
    path: str = MISSING
    train_file: str = "train.tsv"
    valid_file: str = "dev.tsv"
    test_file: str = "test.tsv"
    label_column: str = "0"
    text_column: str = "1"
    header: bool = True
    delimiter: str | None = None
    lowercase: bool = False
    unescape_ptb: bool = False
    min_count: int = 1
    max_tokens: int | None = None
    word_dropout: float = 0.0
    label_smoothing: float = 0.0
    batch_size: int = 64
    eval_batch_size: int = 256
    subword_buckets: int = 0
    subword_min_n: int = 3
    subword_max_n: int = 5

    def __post_init__(self) -> None:
        _positive(self, "task", "min_count", "batch_size", "eval_batch_size")
        _positive(self, "task", "subword_min_n", "subword_max_n")
        if self.subword_buckets < 0:
            _fail("task.subword_buckets", self.subword_buckets, "0 (no subwords) or more")
        if self.subword_max_n < self.subword_min_n:
            _fail(
                "task.subword_max_n",
                self.subword_max_n,
                f"at least task.subword_min_n ({self.subword_min_n})",
            )
        _positive_or_none(self, "task", "max_tokens", none_means="whole texts")
        _probability(self, "task", "word_dropout", "label_smoothing")
        if self.delimiter is not None and len(self.delimiter) != 1:
            _fail("task.delimiter", repr(self.delimiter), "one character, or null")


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

    name: str = "seq2seq"
    embedding_size: int = 128
    hidden_size: int = 256
    num_layers: int = 1
    cell: RecurrentCell = RecurrentCell.lstm
    bidirectional: bool = True
    dropout: float = 0.1
    attention_style: AttentionStyle = AttentionStyle.luong
    input_feed: bool = False
    teacher_forcing: float = 1.0

    def __post_init__(self) -> None:
        _positive(self, "model", "embedding_size", "hidden_size", "num_layers")
        if self.bidirectional and self.hidden_size % 2:
            _fail(
                "model.hidden_size",
                self.hidden_size,
                "a bidirectional encoder splits it between its two directions, so it must be even",
            )
        _probability(self, "model", "dropout")
        _probability(self, "model", "teacher_forcing", closed=True)
        if self.input_feed and str(self.attention_style) == "bahdanau":
            _fail(
                "model.input_feed",
                "true",
                "input feeding is Luong's (the attentional vector fed to the next step);"
                " Bahdanau attention already feeds the context in: use"
                " model.attention_style=luong or model.input_feed=false",
            )


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

    name: str = "tagger"
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

    def __post_init__(self) -> None:
        _positive(self, "model", "word_embedding_size", "hidden_size", "num_layers")
        if str(self.char_encoder) != "none":
            _positive(self, "model", "char_embedding_size", "char_hidden_size", "char_kernel_size")
        if str(self.char_encoder) == "cnn" and self.char_kernel_size % 2 == 0:
            _fail(
                "model.char_kernel_size", self.char_kernel_size, "it must be odd (centred windows)"
            )
        _probability(self, "model", "dropout")


class LanguageModelDecoder(StrEnum):
    """The language model's output layer: ``full`` a softmax over the whole vocabulary,
    softmax(W o + b) (V x D' weights, shareable with the embedding matrix); ``adaptive`` the
    adaptive softmax of Grave et al. (2017), "Efficient softmax approximation for GPUs":
    a head over the first word ids (meant to be the most frequent words) and one entry per
    tail cluster, each cluster a softmax of its own over a cheaper, narrower projection."""

    full = "full"
    adaptive = "adaptive"


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

    Output layer (``decoder``): ``full``, a softmax over all V words; ``adaptive``, the adaptive
    softmax of Grave et al. (2017) (:class:`torch.nn.AdaptiveLogSoftmaxWithLoss`).
    ``adaptive_cutoffs`` c_1 < ... < c_n < V split the word ids into a head, the words
    [0, c_1), and tail clusters [c_i, c_{i+1}) (the last ends at V). The method wants the
    frequent words in the head: with it, ``task.vocab_order=auto`` numbers the words most
    frequent first (:class:`VocabOrder`; the distribution is exact in any order). With D'
    decoder input features,

        log p(w | o) = log softmax(H o)[w]                                   w < c_1
        log p(w | o) = log softmax(H o)[c_1 + i - 1] + log softmax(U_i P_i o)[w - c_i]
                                                                             c_i <= w < c_{i+1}

    H: (c_1 + n) x D' (with a bias), P_i: D' // div^i x D' and U_i: (c_{i+1} - c_i) x
    D' // div^i, div = ``adaptive_div_value``: rarer clusters get narrower projections. Every
    cut-off must be below the task's vocabulary size, checked when the model is built, and
    the adaptive softmax has no V x D' matrix to share with the embedding, so it needs
    ``tie_weights=false``.
    """

    name: str = "lm"
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
    decoder: LanguageModelDecoder = LanguageModelDecoder.full
    # below PTB's 10,000 words and WikiText-2's 33,278
    adaptive_cutoffs: list[int] = field(default_factory=lambda: [2000, 5000])
    adaptive_div_value: float = 4.0

    def __post_init__(self) -> None:
        _positive(self, "model", "embedding_size", "hidden_size", "num_layers", "attention_window")
        _probability(
            self,
            "model",
            "dropout_embedding",
            "dropout_input",
            "dropout_hidden",
            "dropout_output",
            "weight_drop",
        )
        _non_negative(self, "model", "ar", "tar")
        _positive(self, "model", "init_range")
        cutoffs = list(self.adaptive_cutoffs)
        if not cutoffs:
            _fail(
                "model.adaptive_cutoffs",
                cutoffs,
                "it must list at least one cut-off (without one the adaptive softmax is the full"
                " softmax: use model.decoder=full)",
            )
        if any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in cutoffs):
            _fail("model.adaptive_cutoffs", cutoffs, "every cut-off must be a positive integer")
        if any(cutoffs[i + 1] <= cutoffs[i] for i in range(len(cutoffs) - 1)):
            _fail(
                "model.adaptive_cutoffs",
                cutoffs,
                "the cut-offs must be strictly increasing (e.g. [2000,5000])",
            )
        # torch takes any positive divisor; below 1 the rarer clusters would get wider
        # projections than the frequent ones, the opposite of the method
        if not 1.0 <= self.adaptive_div_value < math.inf:
            _fail(
                "model.adaptive_div_value",
                self.adaptive_div_value,
                "it must be at least 1 (and finite): cluster i projects onto D' / div^i features",
            )
        if str(self.decoder) == "adaptive" and self.tie_weights:
            raise ConfigError(
                "model.decoder=adaptive is not allowed with model.tie_weights=true (the"
                " default): the adaptive softmax cannot tie its weights to the embedding matrix,"
                " it has no vocabulary-by-features matrix to share; set model.tie_weights=false"
            )


@dataclass
class SequenceModelConfig:
    """Sequence-to-value models: ``lstm``, ``lstm_attn``, ``ffattn`` and ``mean``.

    ``num_layers`` counts LSTM layers (``lstm``, ``lstm_attn``) or per-step dense layers
    (``ffattn``, ``mean``). ``head_size`` is the hidden width of the output MLP. For a task
    whose inputs are tokens (text classification) the model first embeds each token in
    ``embedding_size`` features (dropped with ``embedding_dropout``).
    """

    name: str = "lstm_attn"
    hidden_size: int = 100
    num_layers: int = 1
    bidirectional: bool = False
    dropout: float = 0.0
    head_size: int = 100
    output_activation: Activation = Activation.none
    pooling: PoolingImplementation = PoolingImplementation.auto  # ffattn and mean
    chunk_size: int = 4096  # steps per chunk of the chunked pooling
    embedding_size: int = 128  # token inputs only
    embedding_dropout: float = 0.0  # token inputs only
    # lstm, lstm_attn: added to every forget gate's initial bias (0: PyTorch's init, the gate
    # near 0.5; 1: Jozefowicz et al. 2015), attnlstm.models.recurrent.add_forget_gate_bias
    forget_bias: float = 0.0

    def __post_init__(self) -> None:
        _positive(self, "model", "hidden_size", "num_layers", "head_size", "chunk_size")
        _positive(self, "model", "embedding_size")
        _probability(self, "model", "dropout", "embedding_dropout")
        if not math.isfinite(self.forget_bias):
            _fail("model.forget_bias", self.forget_bias, "it must be a finite number")


@dataclass
class AttentionConfig:
    """``attention=<method>``: one of the registered methods (attnlstm.attention.ATTENTION),
    or ``none``; checked against the registry before anything is built."""

    method: str = "none"  # conf/train.yaml picks the default method
    # scorer width for methods that take one (concat / additive: default the key size;
    # feedforward: a two-layer scorer, default the paper's single layer); others ignore it
    hidden_dim: int | None = None

    def __post_init__(self) -> None:
        _positive_or_none(self, "attention", "hidden_dim", none_means="the method's default")


@dataclass
class DeviceConfig:
    type: DeviceType = DeviceType.auto
    index: int = 0

    def __post_init__(self) -> None:
        _non_negative(self, "device", "index")


@dataclass
class OptimConfig:
    name: OptimizerName = OptimizerName.adam
    lr: float = 1e-3
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # adam, adamw
    momentum: float = 0.0  # sgd
    nesterov: bool = False  # sgd
    weight_decay: float = 0.0  # every optimiser (adamw: decoupled)
    scheduler: SchedulerName = SchedulerName.none
    step_size: int = 10  # step: epochs between decays
    gamma: float = 0.5  # step and plateau: decay factor
    patience: int = 2  # plateau: epochs without improvement before decaying
    min_lr: float = 0.0  # cosine and plateau
    averaging: WeightAveraging = WeightAveraging.none
    nonmono: int = 5  # nt_asgd: epochs of the non-monotone trigger
    ema_decay: float = 0.999  # ema: the average's decay per update
    # adam / adamw: PyTorch's fused kernel, one pass over all parameters per step (the same
    # update; several times faster for a large embedding matrix on the CPU)
    fused: bool = False

    def __post_init__(self) -> None:
        _positive(self, "optim", "lr", "step_size")
        if len(self.betas) != 2 or not all(0.0 <= beta < 1.0 for beta in self.betas):
            _fail("optim.betas", list(self.betas), "two values, each in [0, 1)")
        _non_negative(self, "optim", "momentum", "weight_decay", "patience", "min_lr", "nonmono")
        if str(self.name) == "sgd" and self.nesterov and self.momentum <= 0:
            _fail("optim.nesterov", "true", "Nesterov momentum needs optim.momentum > 0")
        if not 0.0 < self.gamma < 1.0:
            _fail("optim.gamma", self.gamma, "a decay factor in (0, 1)")
        if not 0.0 < self.ema_decay < 1.0:
            _fail("optim.ema_decay", self.ema_decay, "it must lie in (0, 1)")


def _check_batch_limit(key: str, value: int | float | None) -> None:
    """``trainer.limit_*_batches``: a count (an integer >= 1), a fraction in (0, 1], or null."""
    if value is None or isinstance(value, bool):
        if isinstance(value, bool):
            _fail(key, value, "a count of batches (>= 1), a fraction in (0, 1], or null")
        return
    if isinstance(value, int) and value >= 1:
        return
    if isinstance(value, float) and 0.0 < value <= 1.0:
        return
    _fail(key, value, "a count of batches (an integer >= 1), a fraction in (0, 1], or null (all)")


#: config keys that do not change what a run computes (where it reads data, whether it shows a
#: bar, how many CPU threads it uses): runs that differ only in them are the same setting, for
#: :mod:`attnlstm.compare`'s groups and for a sweep's check that a finished job still matches
#: today's composition (:mod:`attnlstm.sweep_resume`)
NOT_A_SETTING = frozenset({"resume", "data_dir", "trainer.progress_bar", "trainer.threads"})

#: flattened keys added after runs were saved, each with the value that does what those runs
#: did (its default): a saved config without the key is the same setting as one with this
#: value, for :mod:`attnlstm.compare`'s groups and a finished sweep job's drift check
KEYS_ADDED_SINCE: dict[str, Any] = {"model.forget_bias": 0.0, "task.subword_buckets": 0}


def setting_value(config: dict[str, Any], key: str) -> Any:
    """``config[key]`` of a flattened config; for a key of :data:`KEYS_ADDED_SINCE` that
    ``config`` lacks (saved before the key existed), the value that did what it did; else
    None. A value equal to that one (``0``, ``-0.0``) is returned as it, so that the same
    setting reads the same everywhere."""
    value = config.get(key, KEYS_ADDED_SINCE.get(key))
    if key in KEYS_ADDED_SINCE and value == KEYS_ADDED_SINCE[key]:
        return KEYS_ADDED_SINCE[key]
    return value


#: ``trainer.precision`` values: float32, bfloat16 autocast, float16 autocast + grad scaler
PRECISIONS = ("32", "bf16", "16")


@dataclass
class TrainerConfig:
    max_epochs: int = 100
    grad_clip: float | None = None  # clip the global gradient norm to this value
    early_stopping_patience: int | None = None  # epochs without a better validation monitor
    stop_when_solved: bool = True  # stop once the task says it is solved (e.g. 100% accuracy)
    log_every_n_steps: int = 1  # train/loss, train/lr, train/grad_norm
    progress_bar: bool = True  # shown only when the output is a terminal
    attention_images: int = 4  # validation examples whose attention weights are logged
    # end each epoch after this many updates (an integer), or this fraction of it (0.25)
    limit_train_batches: int | float | None = None
    # evaluate (validation and test) on this many batches, or this fraction of them
    limit_eval_batches: int | float | None = None
    # also save last.pt every N updates, within epochs (long epochs: lose at most N updates)
    checkpoint_every_n_steps: int | None = None
    # debug=fast_dev_run: one batch of each split, no checkpoint, no metrics.json, no logger
    fast_dev_run: bool = False
    # debug=overfit: every epoch trains on the same first N batches (0: off)
    overfit_batches: int = 0
    # debug=profile: a torch.profiler trace of the first N updates in <run dir>/profile/
    profile_steps: int = 0
    # 32 (float32), bf16 (autocast to bfloat16; CPU and GPU) or 16 (float16 autocast with a
    # gradient scaler; CUDA only)
    precision: str = "32"
    # sum the gradients of k batches before each optimiser update (an effective batch k times
    # larger); a stop or a checkpoint happens between updates only
    accumulate_grad_batches: int = 1
    # PyTorch's CPU threads for this run. null: the thread governor follows the cores other
    # processes leave free, up to all cores or OMP_NUM_THREADS (a parallel sweep's share keeps
    # jobs x threads <= cores). A number fixes them, as bit-exact repeats need: a float sum
    # split over another number of threads differs in its last bits.
    threads: int | None = None

    def __post_init__(self) -> None:
        _positive(self, "trainer", "max_epochs", "log_every_n_steps")
        _positive_or_none(self, "trainer", "grad_clip", none_means="no clipping")
        _positive_or_none(
            self, "trainer", "early_stopping_patience", none_means="no early stopping"
        )
        _positive_or_none(
            self, "trainer", "checkpoint_every_n_steps", none_means="at the end of each epoch"
        )
        _check_batch_limit("trainer.limit_train_batches", self.limit_train_batches)
        _check_batch_limit("trainer.limit_eval_batches", self.limit_eval_batches)
        _non_negative(self, "trainer", "attention_images", "overfit_batches", "profile_steps")
        _positive(self, "trainer", "accumulate_grad_batches")
        _positive_or_none(self, "trainer", "threads", none_means="every core")
        if str(self.precision) not in PRECISIONS:
            _fail("trainer.precision", self.precision, f"one of {', '.join(PRECISIONS)}")


@dataclass
class LoggerConfig:
    """One entry of ``logger`` (``logger=tensorboard``, the default; ``csv``; ``mlflow``;
    ``many``: all three). ``name`` is the backend (attnlstm.loggers.LOGGERS).
    ``tracking_uri`` (mlflow): where runs are stored; null is a file store ``mlruns/`` in the
    run's own folder. ``experiment`` (mlflow): the experiment the run is filed under."""

    name: str = "tensorboard"
    tracking_uri: str | None = None
    experiment: str = "attnlstm"


@dataclass
class TrainConfig:
    """The root config (``conf/train.yaml``)."""

    task: Any = MISSING
    model: Any = MISSING
    attention: AttentionConfig = field(default_factory=AttentionConfig)
    device: DeviceConfig = field(default_factory=DeviceConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    logger: dict[str, LoggerConfig] = field(default_factory=dict)  # conf/logger/
    seed: int = 0
    resume: str | None = None  # a run directory to continue
    data_dir: str | None = None  # datasets (default: $ATTNLSTM_DATA)
    # what a sweeper optimises (hparams_search=...): a key of metrics.json's "test" or
    # "best" (e.g. test/accuracy, val/loss); the job then returns that number
    optimized_metric: str | None = None


#: The schema each fixed config group's options start from. They live in the ConfigStore under
#: ``schema/<group>`` (out of the way of the group's own option list) and an option's YAML
#: begins with ``defaults: [/schema/<group>@_here_: <name>]``. The task and model schemas are
#: stored from the registries (``schema/task/<family>``, ``schema/model/<model name>``): see
#: :func:`register_configs`.
GROUP_SCHEMAS: dict[str, dict[str, type]] = {
    "attention": {"attention": AttentionConfig},
    "device": {"device": DeviceConfig},
    "trainer": {"trainer": TrainerConfig},
    "optim": {"optim": OptimConfig},
    "logger": {"logger": LoggerConfig},
}


def register_configs(families: dict[str, dict[str, type]] | None = None) -> None:
    """Register the root schema, the fixed groups' schemas and ``families`` (``{"task":
    {family: schema}, "model": {model name: schema}}``, from the registries) in Hydra's
    ConfigStore."""
    store = ConfigStore.instance()
    store.store(name="train_schema", node=TrainConfig)
    for group, schemas in {**GROUP_SCHEMAS, **(families or {})}.items():
        for name, node in schemas.items():
            store.store(group=f"schema/{group}", name=name, node=node)


# -- from a composed config to typed objects ------------------------------------------------


def _unknown_keys(node: Any, prefix: str = "") -> list[str]:
    """Keys of ``node`` that its schema does not have (``+key=value`` additions)."""
    if not isinstance(node, DictConfig):
        return []
    schema = OmegaConf.get_type(node)
    if schema is None or not dataclasses.is_dataclass(schema):
        allowed = None
    else:
        allowed = {f.name for f in dataclasses.fields(schema)}
    unknown = []
    for key in node:
        name = f"{prefix}{key}"
        if allowed is not None and key not in allowed:
            value = OmegaConf.to_container(node, resolve=False).get(key)
            group = prefix.rstrip(".") or "the root config"
            unknown.append(
                f"{name}={_show(value)} is not allowed: {group} has no key {key!r} (its keys:"
                f" {', '.join(sorted(allowed))})"
            )
            continue
        child = node._get_node(key)
        if isinstance(child, DictConfig) and not child._is_missing() and not child._is_none():
            unknown.extend(_unknown_keys(child, f"{name}."))
    return unknown


def validate(cfg: DictConfig) -> TrainConfig:
    """The typed config of a composed one: every schema's ``__post_init__`` runs (range
    checks), keys the schema does not have and required values left unset are refused.
    Raises :class:`ConfigError` with one sentence naming the key."""
    unknown = _unknown_keys(cfg)
    if unknown:
        raise ConfigError(unknown[0])
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        what = "the data folder" if missing[0] == "task.path" else "a value"
        raise ConfigError(
            f"{missing[0]}=??? is not allowed: it is required; give {what}, e.g."
            f" {missing[0]}=<{what.split()[-1]}>"
        )
    typed = OmegaConf.to_object(cfg)
    assert isinstance(typed, TrainConfig)
    return typed


def typed(node: Any, schema: type[T]) -> T:
    """``node`` as an instance of the dataclass ``schema`` (``__post_init__`` checks run): a
    DictConfig composed from the schema, a plain DictConfig or dict, or the instance itself."""
    if isinstance(node, schema):
        return node
    if isinstance(node, DictConfig):
        node_type = OmegaConf.get_type(node)
        if node_type is not None and dataclasses.is_dataclass(node_type):
            instance = OmegaConf.to_object(node)
            if isinstance(instance, schema):
                return instance
        node = OmegaConf.to_container(node, resolve=True)
    known = {f.name for f in dataclasses.fields(schema)}
    unknown = sorted(set(node) - known)
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} for {schema.__name__}")
    converted = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), node))
    assert isinstance(converted, schema)
    return converted


def retyped(saved: DictConfig, candidates: dict[str, list[type]]) -> DictConfig:
    """A saved run config (``config.yaml``, plain values) with its ``task`` and ``model``
    nodes typed again by their schemas (``candidates``: ``{"task": [schemas], "model":
    [...]}``, from the registries), found by their keys: the schema that leaves the fewest
    saved keys out and accepts the saved ``name``, then the fewest of its own fields unset. A
    run saved before a key was added still matches; keys the schema no longer has (a schema
    that was split in two) are dropped. A schema's ``BEFORE_THE_KEY`` (key -> value) gives
    what a run saved before that key existed did, where the key's default differs from it."""
    saved = saved.copy()
    for group, schemas in candidates.items():
        node = saved.get(group)
        if not isinstance(node, DictConfig):
            continue
        keys = set(node.keys())
        ranked = []
        for schema in schemas:
            fields = {f.name for f in dataclasses.fields(schema)}
            kept = OmegaConf.masked_copy(node, sorted(keys & fields))
            try:
                typed_node = OmegaConf.merge(OmegaConf.structured(schema), kept)
            except Exception:  # the saved name (or a value) is not one this schema accepts
                continue
            # a key added later whose default changed what older runs did: the old behaviour
            for key, value in getattr(schema, "BEFORE_THE_KEY", {}).items():
                if key not in keys:
                    typed_node[key] = value
            ranked.append((len(keys - fields), len(fields - keys), typed_node))
        if not ranked:
            raise ConfigError(
                f"the saved run's {group} settings ({', '.join(sorted(keys))}) fit no {group}"
                " schema of this attnlstm; resume it with the release that started it"
            )
        saved[group] = min(ranked, key=lambda entry: entry[:2])[2]
    return saved
