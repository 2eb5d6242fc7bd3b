"""Trained taggers from run folders, one or several voting as an ensemble: what
``scripts/tag.py`` and ``scripts/evaluate.py`` load."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn

from attnlstm.data.tagging import TaggingVocab
from attnlstm.models import build_tagger
from attnlstm.models.ensemble import TaggerEnsemble
from attnlstm.tasks.base import TaskSpec
from attnlstm.training.io import load_trained_model


def load_tagger(path: Path) -> tuple[nn.Module, TaggingVocab, int]:
    """The model (its evaluated weights), vocabulary and ``task.max_word_chars`` of a
    ``model=tagger`` checkpoint (a run folder: its best.pt, else last.pt); ValueError for
    another model."""
    checkpoint, cfg = load_trained_model(path, "tagger", "vocab", "a tagger")
    vocab = TaggingVocab.from_state_dict(checkpoint["task"]["vocab"])
    aux_size = 0 if vocab.aux_tags is None else len(vocab.aux_tags)  # its own auxiliary head
    spec = TaskSpec(len(vocab.words), len(vocab.tags), "tags", len(vocab.chars), aux_size)
    model = build_tagger(cfg.model, cfg.attention, spec)
    model.load_state_dict(checkpoint.get("eval_model") or checkpoint["model"])
    return model.eval(), vocab, int(cfg.task.max_word_chars)


def load_taggers(paths: Sequence[Path]) -> tuple[nn.Module, TaggingVocab, int]:
    """:func:`load_tagger` for one path; for several, their :class:`TaggerEnsemble` (ValueError
    unless they share the vocabulary, see :meth:`TaggingVocab.matches`, and
    ``task.max_word_chars``)."""
    model, vocab, max_word_chars = load_tagger(paths[0])
    if len(paths) == 1:
        return model, vocab, max_word_chars
    members = [model]
    for path in paths[1:]:
        member, member_vocab, member_chars = load_tagger(path)
        if not member_vocab.matches(vocab) or member_chars != max_word_chars:
            raise ValueError(
                f"{path} was trained with another vocabulary than {paths[0]}; an ensemble"
                " needs taggers of the same task and data settings (task.min_count,"
                " task.lowercase, task.max_word_chars)"
            )
        members.append(member)
    return TaggerEnsemble(members).eval(), vocab, max_word_chars
