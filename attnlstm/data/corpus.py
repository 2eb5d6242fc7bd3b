"""Word-level text corpora for language modelling, read the way the peers read them.

A line is split on whitespace and followed by ``<eos>`` (pytorch/examples'
``word_language_model``, awd-lstm-lm). Each split becomes one long stream of word ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from attnlstm.data.textfile import read_lines

EOS = "<eos>"
UNK = "<unk>"


class Vocabulary:
    """A word <-> id mapping in order of first appearance (ids are stable for a corpus)."""

    def __init__(self, words: Iterable[str] = ()) -> None:
        self.words: list[str] = []
        self.ids: dict[str, int] = {}
        for word in words:
            self.add(word)

    def add(self, word: str) -> int:
        if word not in self.ids:
            self.ids[word] = len(self.words)
            self.words.append(word)
        return self.ids[word]

    def __len__(self) -> int:
        return len(self.words)

    def __contains__(self, word: str) -> bool:
        return word in self.ids

    def encode(self, words: Iterable[str], unknown: int | None = None) -> list[int]:
        """Ids of ``words``; a word outside the vocabulary becomes ``unknown`` (KeyError if
        None)."""
        if unknown is None:
            return [self.ids[w] for w in words]
        return [self.ids.get(w, unknown) for w in words]

    def decode(self, ids: Iterable[int]) -> list[str]:
        return [self.words[i] for i in ids]

    def state_dict(self) -> dict[str, list[str]]:
        return {"words": list(self.words)}

    @classmethod
    def from_state_dict(cls, state: dict[str, list[str]]) -> Vocabulary:
        return cls(state["words"])


def read_words(path: Path) -> list[str]:
    """Whitespace tokens of ``path``, each line ending with ``<eos>``
    (:class:`~attnlstm.data.textfile.NotUtf8Error`, naming the file and the line, for bytes
    that are not UTF-8)."""
    words: list[str] = []
    for line in read_lines(path):
        words.extend(line.split())
        words.append(EOS)
    return words


@dataclass
class Corpus:
    """A vocabulary and three id streams (1-D int64 tensors)."""

    vocab: Vocabulary
    train: Tensor
    valid: Tensor
    test: Tensor

    @classmethod
    def from_files(
        cls,
        train: Path,
        valid: Path,
        test: Path,
        max_train_tokens: int | None = None,
        by_frequency: bool = False,
    ) -> Corpus:
        """The vocabulary is the training split's words (plus ``<eos>``); a word of the
        validation or test split that training never saw maps to ``<unk>``, which is added if
        the training text lacks it (PTB and WikiText-2 already use ``<unk>`` for rare words,
        and every valid/test word occurs in their training splits). Ids follow the words'
        first appearance (``<eos>`` is 0), or with ``by_frequency`` their training counts,
        most frequent first (ties by first appearance)."""
        train_words = read_words(train)
        if max_train_tokens is not None:
            train_words = train_words[:max_train_tokens]
        first_seen = Vocabulary([EOS])
        for word in train_words:
            first_seen.add(word)
        vocab = first_seen
        if by_frequency:
            counts = Counter(train_words)
            # sorted() is stable: equal counts keep their first-seen order
            vocab = Vocabulary(sorted(first_seen.words, key=lambda word: -counts[word]))
        streams = []
        other = [read_words(valid), read_words(test)]
        if any(w not in vocab for words in other for w in words):
            vocab.add(UNK)
        unknown = vocab.ids.get(UNK)
        for words in (train_words, *other):
            streams.append(torch.tensor(vocab.encode(words, unknown), dtype=torch.long))
        return cls(vocab, *streams)


def batchify(stream: Tensor, rows: int) -> Tensor:
    """Cut a 1-D stream into ``rows`` parallel rows (rows, N), dropping the remainder, as the
    peers do: row r holds tokens [r N, (r + 1) N)."""
    if rows <= 0:
        raise ValueError(f"rows must be positive, got {rows}")
    length = stream.numel() // rows
    if length < 2:
        raise ValueError(f"a stream of {stream.numel()} tokens is too short for {rows} rows")
    return stream[: rows * length].view(rows, length)
