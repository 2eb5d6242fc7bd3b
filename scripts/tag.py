#!/usr/bin/env python
"""Tag raw sentences with a trained tagger (``model=tagger``) checkpoint.

    python scripts/tag.py outputs/pos_ewt/tagger-none/<timestamp> "The dog ate the apple ."
    echo "I do n't know ." | python scripts/tag.py run/best.pt        # one sentence per line
    python scripts/tag.py RUN_1 --also RUN_2 "The dog ate the apple ."   # an ensemble

Tokens are split on whitespace (tokenise as the treebank did: "don't" is "do n't" in EWT).
Each sentence is printed as word/TAG pairs on one line. ``--also`` adds taggers trained on the
same vocabulary; the tags are then the ensemble's, by the mean of the taggers' probabilities.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from attnlstm.data.tagging import TaggingVocab, collate, encode_sentence
from attnlstm.models import build_tagger
from attnlstm.models.ensemble import TaggerEnsemble
from attnlstm.tasks.base import TaskSpec
from attnlstm.training.io import load_trained_model


def load_tagger(path: Path) -> tuple[torch.nn.Module, TaggingVocab, int]:
    """The model, vocabulary and ``task.max_word_chars`` of a checkpoint (a run folder: its
    best.pt, else last.pt)."""
    checkpoint, cfg = load_trained_model(path, "tagger", "vocab", "a tagger")
    vocab = TaggingVocab.from_state_dict(checkpoint["task"]["vocab"])
    aux_size = 0 if vocab.aux_tags is None else len(vocab.aux_tags)
    spec = TaskSpec(len(vocab.words), len(vocab.tags), "tags", len(vocab.chars), aux_size)
    model = build_tagger(cfg.model, cfg.attention, spec)
    model.load_state_dict(checkpoint.get("eval_model") or checkpoint["model"])
    return model.eval(), vocab, int(cfg.task.max_word_chars)


def load_ensemble(paths: Sequence[Path]) -> tuple[torch.nn.Module, TaggingVocab, int]:
    """:func:`load_tagger` for one path; for several, their :class:`TaggerEnsemble` (ValueError
    unless they share the vocabulary and ``task.max_word_chars``)."""
    model, vocab, max_word_chars = load_tagger(paths[0])
    if len(paths) == 1:
        return model, vocab, max_word_chars
    members = [model]
    for path in paths[1:]:
        member, member_vocab, member_chars = load_tagger(path)
        if not member_vocab.matches(vocab) or member_chars != max_word_chars:
            raise ValueError(
                f"{path} was trained with another vocabulary than {paths[0]}; an ensemble"
                " needs taggers of the same task and data settings"
            )
        members.append(member)
    return TaggerEnsemble(members).eval(), vocab, max_word_chars


@torch.inference_mode()
def tag(
    model: torch.nn.Module,
    vocab: TaggingVocab,
    sentences: Sequence[Sequence[str]],
    max_word_chars: int = 30,
    batch_size: int = 64,
) -> list[list[str]]:
    """The predicted tag of every word of every sentence (sentences of whitespace tokens)."""
    tagged: list[list[str]] = []
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start : start + batch_size]
        batch = collate([encode_sentence(vocab, words, None, max_word_chars) for words in chunk])
        logits = model(batch.words, batch.chars, batch.char_lengths, batch.lengths).logits
        predicted = logits.argmax(-1)
        for row, words in enumerate(chunk):
            tagged.append(vocab.tags.decode(predicted[row, : len(words)].tolist()))
    return tagged


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a run folder or a .pt file")
    parser.add_argument(
        "sentences", nargs="*", help="sentences to tag (default: one per line on stdin)"
    )
    parser.add_argument(
        "--also",
        type=Path,
        action="append",
        default=[],
        metavar="CHECKPOINT",
        help="another tagger of the same vocabulary: tag with the ensemble (repeatable)",
    )
    args = parser.parse_intermixed_args(argv)  # sentences may follow --also
    try:
        model, vocab, max_word_chars = load_ensemble([args.checkpoint, *args.also])
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    lines = args.sentences or sys.stdin.read().splitlines()
    sentences = [line.split() for line in lines if line.strip()]
    if not sentences:
        print("error: no sentence to tag", file=sys.stderr)
        return 2
    for words, tags in zip(sentences, tag(model, vocab, sentences, max_word_chars), strict=True):
        print(" ".join(f"{word}/{tag_}" for word, tag_ in zip(words, tags, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
