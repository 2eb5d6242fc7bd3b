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
from attnlstm.training.tagger_io import load_taggers


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
        model, vocab, max_word_chars = load_taggers([args.checkpoint, *args.also])
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
