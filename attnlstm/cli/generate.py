"""Sample text from a trained language model (``model=lm``) run.

    attnlstm-generate outputs/lm_ptb/lm-general/<timestamp>            # best.pt there
    attnlstm-generate run/last.pt --words 200 --temperature 0.8 --seed 3
    attnlstm-generate run --prompt "the company said"

The model reads the prompt (default: an end of sentence), then draws each next word from
softmax(logits / temperature), feeding it back in with the state (and attention memory)
carried. ``<eos>`` is printed as a line break.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from attnlstm.cli.common import ArgumentParser, Bounded, command, open_run
from attnlstm.data.corpus import EOS, UNK, Vocabulary

__all__ = ["generate", "load_language_model", "main"]


def load_language_model(path: str | Path) -> tuple[torch.nn.Module, Vocabulary]:
    """The model (its evaluated weights, in eval mode) and vocabulary of a ``model=lm`` run
    folder (its best.pt, else last.pt) or checkpoint file.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: not an attnlstm checkpoint, or a run of another model.
    """
    run = open_run(path, "lm")
    if "vocab" not in run.task_state:
        raise ValueError(f"{run.path} holds no vocabulary; it is not a language model's run")
    return run.model, Vocabulary.from_state_dict(run.task_state["vocab"])


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    vocab: Vocabulary,
    words: int,
    temperature: float = 1.0,
    seed: int = 0,
    prompt: str = "",
) -> list[str]:
    """Sample a continuation of ``prompt``.

    Args:
        model: a language model in eval mode.
        vocab: its vocabulary.
        words: how many words to draw (>= 0).
        temperature: the logits are divided by it (> 0): lower is greedier.
        seed: seeds the draws.
        prompt: whitespace-separated words to continue (unknown ones read as ``<unk>``);
            empty: start after an end of sentence.

    Returns:
        The ``words`` sampled words (``<eos>`` included as a word).

    Raises:
        ValueError: a temperature that is not positive, or a negative word count.
    """
    if not temperature > 0:  # NaN too
        raise ValueError(f"temperature must be positive, got {temperature}")
    if words < 0:
        raise ValueError(f"the number of words must be at least 0, got {words}")
    generator = torch.Generator().manual_seed(seed)
    unknown = vocab.ids.get(UNK, vocab.ids[EOS])
    context = vocab.encode(prompt.split() or [EOS], unknown)
    output = model(torch.tensor([context]), None)
    sampled = []
    for _ in range(words):
        probs = torch.softmax(output.logits[0, -1] / temperature, dim=-1)
        word = int(torch.multinomial(probs, 1, generator=generator))
        sampled.append(vocab.words[word])
        output = model(torch.tensor([[word]]), output.state)
    return sampled


def build_parser() -> ArgumentParser:
    """The command line of ``attnlstm-generate``; the numbers are checked as it is parsed."""
    parser = ArgumentParser(prog="attnlstm-generate", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a run folder or a .pt file")
    parser.add_argument(
        "--words", type=int, default=100, action=Bounded, minimum=1, help="words to draw"
    )
    parser.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        action=Bounded,
        minimum=0,
        strict=True,
        help="divides the logits (> 0; lower is greedier)",
    )
    parser.add_argument("--seed", type=int, default=0, action=Bounded, minimum=0, maximum=2**63 - 1)
    parser.add_argument("--prompt", default="", help="text to continue (default: a new line)")
    return parser


@command
def main(argv: Sequence[str] | None = None) -> int:
    """Run ``attnlstm-generate`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit
    status: 0, or 2 after one ``error:`` line on stderr."""
    args = build_parser().parse_intermixed_args(argv)
    model, vocab = load_language_model(args.checkpoint)
    text = generate(model, vocab, args.words, args.temperature, args.seed, args.prompt)
    lines = " ".join([args.prompt, *text]).strip().replace(f" {EOS}", "\n").replace(EOS, "\n")
    print("\n".join(line.strip() for line in lines.split("\n")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
