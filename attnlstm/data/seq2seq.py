"""Sequence-to-sequence data: vocabularies, padded batches, the synthetic ``reverse`` and
``sort`` problems, and the English-French sentence pairs of PyTorch's translation tutorial.

Token ids reserve 0 for padding, 1 for ``<unk>``, 2 for ``<bos>`` and 3 for ``<eos>`` in the
source and the target vocabularies alike. A batch carries the target twice: ``target_input``
= BOS y_1 .. y_n (what a teacher-forced decoder reads) and ``target_output`` = y_1 .. y_n EOS
(what it must predict, :data:`IGNORE` at padding).
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from attnlstm.data.corpus import Vocabulary
from attnlstm.data.textfile import read_lines
from attnlstm.errors import ConfigError

SPECIALS = ("<pad>", "<unk>", "<bos>", "<eos>")
PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
#: the target at padded positions: ``cross_entropy``'s default ``ignore_index``
IGNORE = -100

#: the tutorial's English prefixes ("i m" is "i'm" after normalisation)
TUTORIAL_PREFIXES = (
    "i am ",
    "i m ",
    "he is",
    "he s ",
    "she is",
    "she s ",
    "you are",
    "you re ",
    "we are",
    "we re ",
    "they are",
    "they re ",
)


def make_vocabulary(sentences: Iterable[Sequence[str]], min_count: int = 1) -> Vocabulary:
    """The specials, then every token seen at least ``min_count`` times, in order of first
    appearance."""
    if min_count < 1:
        raise ValueError(f"min_count must be at least 1, got {min_count}")
    counts: Counter[str] = Counter()
    for sentence in sentences:
        counts.update(sentence)
    return Vocabulary([*SPECIALS, *(w for w, n in counts.items() if n >= min_count)])


@dataclass
class Pair:
    """One example: source and target tokens, and every reference target of this source in
    its split (the target included), for exact match and multi-reference BLEU."""

    source: tuple[str, ...]
    target: tuple[str, ...]
    references: tuple[tuple[str, ...], ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if not self.source or not self.target:
            raise ValueError("a pair needs a non-empty source and target")
        if not self.references:
            self.references = (self.target,)


@dataclass
class Seq2SeqBatch:
    """Padded pairs.

    Attributes:
        source: (B, S) int64 ids, 0 beyond each source.
        source_lengths: (B,) int64, on the CPU (packing wants them there).
        target_input: (B, T) int64: BOS then the target, 0 at padding.
        target_output: (B, T) int64: the target then EOS, :data:`IGNORE` at padding.
        indices: (B,) int64 positions of the pairs in their split (their references).
        beam: whether evaluation decodes this batch with beam search too (the test split).
    """

    source: Tensor
    source_lengths: Tensor
    target_input: Tensor
    target_output: Tensor
    indices: Tensor
    beam: bool = False

    def __len__(self) -> int:
        return self.source.size(0)

    @property
    def inputs(self) -> Tensor:
        return self.source

    @property
    def lengths(self) -> Tensor:
        return self.source_lengths

    @property
    def target_tokens(self) -> int:
        """Real target tokens, EOS included."""
        return int((self.target_output != IGNORE).sum())

    def to(self, device: torch.device) -> Seq2SeqBatch:
        return Seq2SeqBatch(
            self.source.to(device, non_blocking=True),
            self.source_lengths,
            self.target_input.to(device, non_blocking=True),
            self.target_output.to(device, non_blocking=True),
            self.indices,
            self.beam,
        )

    def select(self, count: int) -> Seq2SeqBatch:
        """The first ``count`` pairs."""
        return Seq2SeqBatch(
            self.source[:count],
            self.source_lengths[:count],
            self.target_input[:count],
            self.target_output[:count],
            self.indices[:count],
            self.beam,
        )


def collate(
    sources: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], indices: Sequence[int]
) -> Seq2SeqBatch:
    """Pad id sequences (sources and targets without BOS/EOS) into one batch."""
    batch = len(sources)
    source_lengths = torch.tensor([len(s) for s in sources], dtype=torch.long)
    if batch == 0 or int(source_lengths.min()) == 0:
        raise ValueError("every source needs at least one token")
    steps = max(len(t) for t in targets) + 1
    source = torch.zeros(batch, int(source_lengths.max()), dtype=torch.long)
    target_input = torch.zeros(batch, steps, dtype=torch.long)
    target_output = torch.full((batch, steps), IGNORE, dtype=torch.long)
    for row, (src, tgt) in enumerate(zip(sources, targets, strict=True)):
        source[row, : len(src)] = torch.tensor(src, dtype=torch.long)
        target_input[row, : len(tgt) + 1] = torch.tensor([BOS_ID, *tgt], dtype=torch.long)
        target_output[row, : len(tgt) + 1] = torch.tensor([*tgt, EOS_ID], dtype=torch.long)
    return Seq2SeqBatch(source, source_lengths, target_input, target_output, torch.tensor(indices))


# -- synthetic problems ----------------------------------------------------------------------


def synthetic_vocabulary(symbols: int) -> Vocabulary:
    """The specials and ``symbols`` symbols named ``s0``, ``s1``, ... (ids 4 ...)."""
    return Vocabulary([*SPECIALS, *(f"s{i}" for i in range(symbols))])


def synthetic_pairs(
    problem: str, count: int, symbols: int, min_length: int, max_length: int, seed: int
) -> list[Pair]:
    """``count`` random sources of symbols (lengths uniform in [min_length, max_length]) and
    their targets: the source reversed (``reverse``) or sorted by symbol id (``sort``)."""
    if problem not in ("reverse", "sort"):
        raise ValueError(f"problem must be reverse or sort, got {problem!r}")
    rng = random.Random(seed)
    pairs = []
    for _ in range(count):
        length = rng.randint(min_length, max_length)
        ids = [rng.randrange(symbols) for _ in range(length)]
        target = ids[::-1] if problem == "reverse" else sorted(ids)
        pairs.append(Pair(tuple(f"s{i}" for i in ids), tuple(f"s{i}" for i in target)))
    return pairs


# -- English-French --------------------------------------------------------------------------


def normalize_tutorial(text: str) -> str:
    """The tutorial's normalisation: lowercase, accents stripped to ASCII, a space before
    ``. ! ?``, any other run of non-letters a single space.

    >>> normalize_tutorial("J'ai froid.")
    'j ai froid .'
    """
    text = "".join(
        c
        for c in unicodedata.normalize("NFD", text.lower().strip())
        if unicodedata.category(c) != "Mn"
    )
    text = re.sub(r"([.!?])", r" \1", text)
    text = re.sub(r"[^a-zA-Z.!?]+", r" ", text)
    return text.strip()


def read_sentence_pairs(path: Path) -> list[tuple[str, str]]:
    """The (English, French) pairs of a tab-separated file, normalised.

    Raises:
        ConfigError: a line without a tab, naming the file and the line;
            :class:`~attnlstm.data.textfile.NotUtf8Error` for bytes that are not UTF-8.
    """
    pairs = []
    for number, line in enumerate(read_lines(path), start=1):
        line = line.rstrip("\n").rstrip("\r")
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise ConfigError(f"{path}:{number}: expected 'English<TAB>French', got {line!r}")
        english, french = normalize_tutorial(fields[0]), normalize_tutorial(fields[1])
        if english and french:
            pairs.append((english, french))
    return pairs


def tutorial_filter(english: str, french: str, max_length: int = 10) -> bool:
    """The tutorial's ``filterPair``: both sides under ``max_length`` tokens and the English
    side starting with one of :data:`TUTORIAL_PREFIXES`."""
    return (
        len(english.split(" ")) < max_length
        and len(french.split(" ")) < max_length
        and english.startswith(TUTORIAL_PREFIXES)
    )


def split_by_source(
    pairs: Sequence[tuple[str, str]],
    valid_fraction: float,
    test_fraction: float,
    seed: int,
) -> tuple[list[Pair], list[Pair], list[Pair]]:
    """A seeded train/valid/test split of (source, target) pairs that keeps every pair of one
    source sentence in one split (so no test source was seen in training), each pair knowing
    all the references of its source."""
    by_source: dict[str, list[str]] = {}
    for source, target in pairs:
        targets = by_source.setdefault(source, [])
        if target not in targets:
            targets.append(target)
    sources = sorted(by_source)
    random.Random(seed).shuffle(sources)
    n_test = round(len(sources) * test_fraction)
    n_valid = round(len(sources) * valid_fraction)
    groups = {
        "test": sources[:n_test],
        "valid": sources[n_test : n_test + n_valid],
        "train": sources[n_test + n_valid :],
    }
    splits: dict[str, list[Pair]] = {}
    for name, group in groups.items():
        split = []
        for source in group:
            references = tuple(tuple(t.split(" ")) for t in by_source[source])
            for reference in references:
                split.append(Pair(tuple(source.split(" ")), reference, references))
        splits[name] = split
    return splits["train"], splits["valid"], splits["test"]
