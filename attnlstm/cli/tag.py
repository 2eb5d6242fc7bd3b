"""Tag raw sentences with a trained tagger (``model=tagger``) run.

    attnlstm-tag outputs/pos_ewt/tagger-none/<timestamp> "The dog ate the apple ."
    echo "I do n't know ." | attnlstm-tag run/best.pt        # one sentence per line
    attnlstm-tag RUN_1 --also RUN_2 "The dog ate the apple ."   # an ensemble

Tokens are split on whitespace (tokenise as the treebank did: "don't" is "do n't" in EWT).
Each sentence is printed as word/TAG pairs on one line. ``--also`` adds taggers trained on the
same vocabulary; the tags are then the ensemble's, by the mean of the taggers' probabilities.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from attnlstm.cli.common import ArgumentParser, command, fail, read_stdin_lines
from attnlstm.cli.taggers import load_taggers
from attnlstm.data.tagging import TaggingVocab, collate, encode_sentence

__all__ = ["main", "tag"]


@torch.inference_mode()
def tag(
    model: torch.nn.Module,
    vocab: TaggingVocab,
    sentences: Sequence[Sequence[str]],
    max_word_chars: int = 30,
    batch_size: int = 64,
) -> list[list[str]]:
    """The predicted tag of every word of every sentence.

    Args:
        model: a tagger or a tagger ensemble, in eval mode.
        vocab: the vocabulary it was trained with.
        sentences: sentences of whitespace tokens.
        max_word_chars: the characters of a word the model reads (``task.max_word_chars``).
        batch_size: sentences tagged at once.

    Returns:
        One list of tags per sentence, one tag per word.
    """
    tagged: list[list[str]] = []
    for start in range(0, len(sentences), batch_size):
        chunk = sentences[start : start + batch_size]
        batch = collate([encode_sentence(vocab, words, None, max_word_chars) for words in chunk])
        logits = model(batch.words, batch.chars, batch.char_lengths, batch.lengths).logits
        predicted = logits.argmax(-1)
        for row, words in enumerate(chunk):
            tagged.append(vocab.tags.decode(predicted[row, : len(words)].tolist()))
    return tagged


def build_parser() -> ArgumentParser:
    """The command line of ``attnlstm-tag``."""
    parser = ArgumentParser(prog="attnlstm-tag", description=__doc__.split("\n\n")[0])
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
    return parser


@command
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``attnlstm-tag`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit
    status: 0, or 2 after one ``error:`` line on stderr."""
    args = build_parser().parse_intermixed_args(argv)  # sentences may follow --also
    model, vocab, max_word_chars = load_taggers([args.checkpoint, *args.also])
    lines = args.sentences or read_stdin_lines()
    sentences = [line.split() for line in lines if line.strip()]
    if not sentences:
        return fail("no sentence to tag")
    for words, tags in zip(sentences, tag(model, vocab, sentences, max_word_chars), strict=True):
        print(" ".join(f"{word}/{tag_}" for word, tag_ in zip(words, tags, strict=True)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
