#!/usr/bin/env python
"""Sample text from a trained language model (``model=lm``) checkpoint.

    python scripts/generate.py outputs/lm_ptb/lm-general/<timestamp>            # best.pt there
    python scripts/generate.py run/last.pt --words 200 --temperature 0.8 --seed 3
    python scripts/generate.py run --prompt "the company said"

The model reads the prompt (default: an end of sentence), then draws each next word from
softmax(logits / temperature), feeding it back in with the state (and attention memory)
carried. ``<eos>`` is printed as a line break.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from attnlstm.data.corpus import EOS, UNK, Vocabulary
from attnlstm.models import build_language_model
from attnlstm.io import load_trained_model


def load_language_model(path: Path) -> tuple[torch.nn.Module, Vocabulary]:
    """The model and vocabulary of a checkpoint (a run folder: its best.pt, else last.pt)."""
    checkpoint, cfg = load_trained_model(path, "lm", "vocab", "a language model")
    vocab = Vocabulary.from_state_dict(checkpoint["task"]["vocab"])
    model = build_language_model(cfg.model, cfg.attention, len(vocab))
    model.load_state_dict(checkpoint.get("eval_model") or checkpoint["model"])
    return model.eval(), vocab


@torch.inference_mode()
def generate(
    model: torch.nn.Module,
    vocab: Vocabulary,
    words: int,
    temperature: float = 1.0,
    seed: int = 0,
    prompt: str = "",
) -> list[str]:
    """``words`` sampled words after ``prompt`` (unknown prompt words read as ``<unk>``)."""
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a run folder or a .pt file")
    parser.add_argument("--words", type=int, default=100)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--prompt", default="", help="text to continue (default: a new line)")
    args = parser.parse_args()
    try:
        model, vocab = load_language_model(args.checkpoint)
        text = generate(model, vocab, args.words, args.temperature, args.seed, args.prompt)
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    lines = " ".join([args.prompt, *text]).strip().replace(f" {EOS}", "\n").replace(EOS, "\n")
    print("\n".join(line.strip() for line in lines.split("\n")))
    return 0


if __name__ == "__main__":
    sys.exit(main())
