"""Vocabularies, encoded sentences and padded batches for tagging.

Word ids and character ids reserve 0 for padding and 1 for ``<unk>``; tag ids have no padding
(padded targets are :data:`IGNORE`, which the loss and the metrics skip).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from attnlstm.batch import lengths_to_mask
from attnlstm.data.conllu import TaggedSentence
from attnlstm.data.corpus import UNK, Vocabulary

PAD = "<pad>"
PAD_ID, UNK_ID = 0, 1
#: the target of padded positions: ``cross_entropy``'s default ``ignore_index``
IGNORE = -100


@dataclass
class TaggingVocab:
    """Words (with ``min_count`` and optional lowercasing), characters and tags of a training
    split, plus the set of its word forms (after lowercasing) to tell unseen words apart;
    ``aux_tags``, the second tag column's tags, when the sentences have one."""

    words: Vocabulary
    chars: Vocabulary
    tags: Vocabulary
    lowercase: bool
    train_forms: frozenset[str]
    aux_tags: Vocabulary | None = None

    @classmethod
    def from_sentences(
        cls, sentences: Sequence[TaggedSentence], min_count: int = 1, lowercase: bool = False
    ) -> TaggingVocab:
        """Build from the training split; ids follow the order of first appearance."""
        if min_count < 1:
            raise ValueError(f"min_count must be at least 1, got {min_count}")
        counts: Counter[str] = Counter()
        chars, tags = Vocabulary([PAD, UNK]), Vocabulary()
        aux_tags = Vocabulary() if sentences and sentences[0].aux_tags is not None else None
        for sentence in sentences:
            for word, tag in zip(sentence.words, sentence.tags, strict=True):
                counts[word.lower() if lowercase else word] += 1
                for char in word:
                    chars.add(char)
                tags.add(tag)
            if aux_tags is not None:
                for aux_tag in sentence.aux_tags or ():
                    aux_tags.add(aux_tag)
        words = Vocabulary([PAD, UNK, *(w for w, n in counts.items() if n >= min_count)])
        return cls(words, chars, tags, lowercase, frozenset(counts), aux_tags)

    def matches(self, other: TaggingVocab) -> bool:
        """Whether ``other`` reads words and characters and numbers the target tags as this
        vocabulary does (the auxiliary tags may differ): taggers of matching vocabularies
        can vote together."""
        mine, theirs = self.state_dict(), other.state_dict()
        mine.pop("aux_tags", None)
        theirs.pop("aux_tags", None)
        return mine == theirs

    def normalize(self, word: str) -> str:
        return word.lower() if self.lowercase else word

    def state_dict(self) -> dict[str, object]:
        state: dict[str, object] = {
            "words": list(self.words.words),
            "chars": list(self.chars.words),
            "tags": list(self.tags.words),
            "lowercase": self.lowercase,
            "train_forms": sorted(self.train_forms),
        }
        if self.aux_tags is not None:  # absent, not None: older checkpoints compare equal
            state["aux_tags"] = list(self.aux_tags.words)
        return state

    @classmethod
    def from_state_dict(cls, state: dict[str, object]) -> TaggingVocab:
        return cls(
            Vocabulary(state["words"]),  # type: ignore[arg-type]
            Vocabulary(state["chars"]),  # type: ignore[arg-type]
            Vocabulary(state["tags"]),  # type: ignore[arg-type]
            bool(state["lowercase"]),
            frozenset(state["train_forms"]),  # type: ignore[arg-type]
            Vocabulary(state["aux_tags"]) if "aux_tags" in state else None,  # type: ignore[arg-type]
        )


@dataclass
class EncodedSentence:
    """One sentence as ids: words (L,), chars (L, C) padded with 0, char_lengths (L,), tags
    (L,) (:data:`IGNORE` when untagged), unseen (L,) bool: the form never occurs in training;
    aux_tags (L,), the second tag column, or None."""

    words: Tensor
    chars: Tensor
    char_lengths: Tensor
    tags: Tensor
    unseen: Tensor
    aux_tags: Tensor | None = None

    def __len__(self) -> int:
        return self.words.numel()


def encode_sentence(
    vocab: TaggingVocab,
    words: Sequence[str],
    tags: Sequence[str] | None = None,
    max_word_chars: int = 30,
    aux_tags: Sequence[str] | None = None,
) -> EncodedSentence:
    """Ids of a sentence's words, characters and tags, and of ``aux_tags`` when given (a tag
    unknown to ``vocab`` is an error: the tag sets come from the training split)."""
    if not words:
        raise ValueError("a sentence needs at least one word")
    forms = [vocab.normalize(w) for w in words]
    word_ids = torch.tensor(vocab.words.encode(forms, UNK_ID), dtype=torch.long)
    char_lengths = torch.tensor([min(len(w), max_word_chars) for w in words], dtype=torch.long)
    chars = torch.zeros(len(words), int(char_lengths.max()), dtype=torch.long)
    for index, word in enumerate(words):
        ids = vocab.chars.encode(word[:max_word_chars], UNK_ID)
        chars[index, : len(ids)] = torch.tensor(ids, dtype=torch.long)
    tag_ids = _tag_ids(vocab.tags, tags, len(words))
    aux_ids = None
    if aux_tags is not None:
        if vocab.aux_tags is None:
            raise ValueError("auxiliary tags given, but the vocabulary has no auxiliary tag set")
        aux_ids = _tag_ids(vocab.aux_tags, aux_tags, len(words))
    unseen = torch.tensor([f not in vocab.train_forms for f in forms], dtype=torch.bool)
    return EncodedSentence(word_ids, chars, char_lengths, tag_ids, unseen, aux_ids)


def _tag_ids(tag_set: Vocabulary, tags: Sequence[str] | None, length: int) -> Tensor:
    """(L,) ids of ``tags`` in ``tag_set``; all :data:`IGNORE` without tags."""
    if tags is None:
        return torch.full((length,), IGNORE, dtype=torch.long)
    unknown = sorted({t for t in tags if t not in tag_set})
    if unknown:
        raise ValueError(
            f"tags {unknown} do not occur in the training split (tags: {tag_set.words})"
        )
    return torch.tensor(tag_set.encode(tags), dtype=torch.long)


@dataclass
class TaggingBatch:
    """Padded sentences.

    Attributes:
        words: (B, T) int64 word ids, 0 beyond each sentence.
        chars: (B, T, C) int64 character ids, 0 beyond each word.
        char_lengths: (B, T) int64 characters per word, 0 at padding.
        targets: (B, T) int64 tag ids, :data:`IGNORE` at padding.
        unseen: (B, T) bool, True at words never seen in training.
        lengths: (B,) int64 words per sentence, on the CPU.
        aux_targets: (B, T) int64 ids of the second tag column (:data:`IGNORE` at padding),
            or None.
    """

    words: Tensor
    chars: Tensor
    char_lengths: Tensor
    targets: Tensor
    unseen: Tensor
    lengths: Tensor
    aux_targets: Tensor | None = None

    def __len__(self) -> int:
        return int(self.lengths.sum())  # words: the trainer's throughput counts these

    @property
    def inputs(self) -> Tensor:
        return self.words

    @property
    def mask(self) -> Tensor:
        """(B, T) bool, True at real words."""
        return lengths_to_mask(self.lengths.to(self.words.device), self.words.size(1))

    def to(self, device: torch.device) -> TaggingBatch:
        """Everything but ``lengths`` moved to ``device``."""
        aux = self.aux_targets
        return TaggingBatch(
            *(t.to(device, non_blocking=True) for t in self._tensors()),
            lengths=self.lengths,
            aux_targets=None if aux is None else aux.to(device, non_blocking=True),
        )

    def select(self, count: int) -> TaggingBatch:
        """The first ``count`` sentences."""
        aux = self.aux_targets
        return TaggingBatch(
            *(t[:count] for t in self._tensors()),
            lengths=self.lengths[:count],
            aux_targets=None if aux is None else aux[:count],
        )

    def _tensors(self) -> tuple[Tensor, ...]:
        return self.words, self.chars, self.char_lengths, self.targets, self.unseen


def collate(sentences: Sequence[EncodedSentence]) -> TaggingBatch:
    """Pad sentences (and their words' characters) into one batch."""
    batch, steps = len(sentences), max(len(s) for s in sentences)
    width = max(s.chars.size(1) for s in sentences)
    words = torch.zeros(batch, steps, dtype=torch.long)
    chars = torch.zeros(batch, steps, width, dtype=torch.long)
    char_lengths = torch.zeros(batch, steps, dtype=torch.long)
    targets = torch.full((batch, steps), IGNORE, dtype=torch.long)
    with_aux = all(s.aux_tags is not None for s in sentences)
    aux_targets = torch.full((batch, steps), IGNORE, dtype=torch.long) if with_aux else None
    unseen = torch.zeros(batch, steps, dtype=torch.bool)
    for row, sentence in enumerate(sentences):
        length = len(sentence)
        words[row, :length] = sentence.words
        chars[row, :length, : sentence.chars.size(1)] = sentence.chars
        char_lengths[row, :length] = sentence.char_lengths
        targets[row, :length] = sentence.tags
        unseen[row, :length] = sentence.unseen
        if aux_targets is not None:
            aux_targets[row, :length] = sentence.aux_tags
    lengths = torch.tensor([len(s) for s in sentences], dtype=torch.long)
    return TaggingBatch(words, chars, char_lengths, targets, unseen, lengths, aux_targets)
