"""Translate sentences with a trained encoder-decoder (``model=seq2seq``) run and save each
one's attention heatmap as a PNG.

    attnlstm-translate outputs/translation/seq2seq-general/<timestamp> "Je suis content."
    echo "Il est grand." | attnlstm-translate run/best.pt --beam 5 --png maps/

Sentences are normalised as the task normalised its data (the tutorial's lowercase ASCII with
punctuation split off); words the model never saw become <unk>. Each line printed is
``source -> output``. ``--png DIR`` writes DIR/<n>.png, the source x output attention.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from omegaconf import OmegaConf

from attnlstm.cli.common import (
    ArgumentParser,
    Bounded,
    check_output_folder,
    command,
    fail,
    open_run,
    read_stdin_lines,
)
from attnlstm.contracts import AttentionMap
from attnlstm.data.corpus import Vocabulary
from attnlstm.data.seq2seq import UNK_ID, collate, normalize_tutorial
from attnlstm.models.seq2seq import Seq2Seq
from attnlstm.plots import save_attention_png

__all__ = ["load_translator", "main", "translate"]


def load_translator(path: str | Path) -> tuple[Seq2Seq, Vocabulary, Vocabulary, dict[str, Any]]:
    """The model (its evaluated weights, in eval mode), source and target vocabularies and
    task config (a plain dict) of a ``model=seq2seq`` run folder (its best.pt, else last.pt)
    or checkpoint file.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: not an attnlstm checkpoint, or a run of another model.
    """
    run = open_run(path, "seq2seq")
    if not {"source_vocab", "target_vocab"} <= set(run.task_state):
        raise ValueError(f"{run.path} holds no vocabularies; it is not a seq2seq task's run")
    assert isinstance(run.model, Seq2Seq)
    source = Vocabulary.from_state_dict(run.task_state["source_vocab"])
    target = Vocabulary.from_state_dict(run.task_state["target_vocab"])
    task_cfg = OmegaConf.to_container(run.cfg.task, resolve=True)
    assert isinstance(task_cfg, dict)
    return run.model, source, target, task_cfg  # type: ignore[return-value]


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
    """Decode ``sentences`` as the task decodes (at most ``ceil(max_ratio * S) + max_extra``
    tokens for a batch whose longest source has S tokens).

    Args:
        model: the encoder-decoder, in eval mode.
        source_vocab: its source vocabulary (unknown words read as ``<unk>``).
        target_vocab: its target vocabulary.
        sentences: source sentences as tokens (not empty).
        beam: beam size; 1 decodes greedily.
        length_penalty: the beam search's length penalty.
        max_ratio: ``task.max_decode_ratio``.
        max_extra: ``task.max_decode_extra``.

    Returns:
        For each sentence, its output tokens (with the final ``<eos>`` when produced) and its
        attention weights (output steps x source tokens), or None for a model without
        attention.
    """
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


def build_parser() -> ArgumentParser:
    """The command line of ``attnlstm-translate``; the numbers are checked as it is parsed."""
    parser = ArgumentParser(prog="attnlstm-translate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a run folder or a .pt file")
    parser.add_argument("sentences", nargs="*", help="sentences (default: one per line on stdin)")
    parser.add_argument(
        "--beam", type=int, default=1, action=Bounded, minimum=1, help="beam size (1: greedy)"
    )
    parser.add_argument(
        "--length-penalty",
        type=float,
        default=None,
        action=Bounded,
        minimum=0,
        help="the beam search's length penalty (default: the run's task.length_penalty)",
    )
    parser.add_argument("--png", type=Path, default=None, help="folder for the heatmaps")
    return parser


@command
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``attnlstm-translate`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit
    status: 0, or 2 after one ``error:`` line on stderr."""
    args = build_parser().parse_intermixed_args(argv)  # sentences may follow the options
    if args.png is not None:  # before the work: not a traceback after the translations
        check_output_folder(args.png, "--png")
    model, source_vocab, target_vocab, task_cfg = load_translator(args.checkpoint)
    lines = args.sentences or read_stdin_lines()
    # synthetic tasks' symbols are taken as they are; sentences as the translation task read them
    normalise = normalize_tutorial if task_cfg["name"] == "translation" else str.strip
    sentences = [normalise(line).split() for line in lines if normalise(line)]
    if not sentences:
        return fail("no sentence to translate")
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
    if args.png is not None and all(weights is None for _, weights in results):
        print(f"no heatmaps in {args.png}: {args.checkpoint} has no attention", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
