#!/usr/bin/env python
"""Translate sentences with a trained encoder-decoder (``model=seq2seq``) checkpoint and save
each one's attention heatmap as a PNG.

    python scripts/translate.py outputs/translation/seq2seq-general/<timestamp> "Je suis content."
    echo "Il est grand." | python scripts/translate.py run/best.pt --beam 5 --png maps/

Sentences are normalised as the task normalised its data (the tutorial's lowercase ASCII with
punctuation split off); words the model never saw become <unk>. Each line printed is
``source -> output``. ``--png DIR`` writes DIR/<n>.png, the source x output attention.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import OmegaConf

from attnlstm.data.corpus import Vocabulary
from attnlstm.data.seq2seq import UNK_ID, collate, normalize_tutorial
from attnlstm.models import build_seq2seq
from attnlstm.models.seq2seq import Seq2Seq
from attnlstm.plots import save_attention_png
from attnlstm.tasks.base import AttentionMap, TaskSpec
from attnlstm.io import load_trained_model


def load_translator(path: Path) -> tuple[Seq2Seq, Vocabulary, Vocabulary, dict]:
    """The model, source and target vocabularies and task config of a checkpoint (a run
    folder: its best.pt, else last.pt)."""
    checkpoint, cfg = load_trained_model(path, "seq2seq", "source_vocab", "a seq2seq model")
    source = Vocabulary.from_state_dict(checkpoint["task"]["source_vocab"])
    target = Vocabulary.from_state_dict(checkpoint["task"]["target_vocab"])
    model = build_seq2seq(cfg.model, cfg.attention, TaskSpec(len(source), len(target), "sequence"))
    model.load_state_dict(checkpoint.get("eval_model") or checkpoint["model"])
    return model.eval(), source, target, OmegaConf.to_container(cfg.task)


@torch.inference_mode()
def translate(
    model: Seq2Seq,
    source_vocab: Vocabulary,
    target_vocab: Vocabulary,
    sentences: Sequence[Sequence[str]],
    beam: int = 1,
    length_penalty: float = 1.0,
    max_ratio: float = 1.5,
    max_extra: int = 5,
) -> list[tuple[list[str], torch.Tensor | None]]:
    """Each sentence's output words and its attention (output steps x source tokens)."""
    batch = collate([source_vocab.encode(s, UNK_ID) for s in sentences], [[]] * len(sentences), [])
    limit = math.ceil(max_ratio * batch.source.size(1)) + max_extra  # as the task decodes
    if beam > 1:
        decoded = model.beam_search(batch.source, batch.source_lengths, limit, beam, length_penalty)
    else:
        decoded = model.greedy(batch.source, batch.source_lengths, limit)
    results = []
    for row, words in enumerate(sentences):
        length = int(decoded.lengths[row])
        steps = min(length + 1, decoded.tokens.size(1))  # the EOS row too, when produced
        output = target_vocab.decode(decoded.tokens[row, :steps].tolist())
        weights = None
        if decoded.attention is not None:
            weights = decoded.attention[row, :steps, : len(words)]
        results.append((output, weights))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a run folder or a .pt file")
    parser.add_argument("sentences", nargs="*", help="sentences (default: one per line on stdin)")
    parser.add_argument("--beam", type=int, default=1, help="beam size (1: greedy)")
    parser.add_argument("--length-penalty", type=float, default=None)
    parser.add_argument("--png", type=Path, default=None, help="folder for the heatmaps")
    args = parser.parse_args(argv)
    if args.beam < 1:
        print("error: --beam must be at least 1", file=sys.stderr)
        return 2
    try:
        model, source_vocab, target_vocab, task_cfg = load_translator(args.checkpoint)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    lines = args.sentences or sys.stdin.read().splitlines()
    # synthetic tasks' symbols are taken as they are; sentences as the translation task read them
    normalise = normalize_tutorial if task_cfg["name"] == "translation" else str.strip
    sentences = [normalise(line).split() for line in lines if normalise(line)]
    if not sentences:
        print("error: no sentence to translate", file=sys.stderr)
        return 2
    penalty = task_cfg["length_penalty"] if args.length_penalty is None else args.length_penalty
    results = translate(
        model,
        source_vocab,
        target_vocab,
        sentences,
        args.beam,
        penalty,
        task_cfg["max_decode_ratio"],
        task_cfg["max_decode_extra"],
    )
    for number, (words, (output, weights)) in enumerate(zip(sentences, results, strict=True)):
        shown = [w for w in output if w != "<eos>"]
        print(f"{' '.join(words)} -> {' '.join(shown)}")
        if args.png is not None and weights is not None:
            attention = AttentionMap(weights, output, list(words), " ".join(words))
            path = save_attention_png(attention, args.png / f"{number}.png")
            print(f"  heatmap: {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
