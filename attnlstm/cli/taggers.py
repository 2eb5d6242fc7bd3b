"""Trained taggers from run folders, one or several voting as an ensemble: what
``attnlstm-tag`` and ``attnlstm-evaluate`` load."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from torch import nn

from attnlstm.cli.common import open_run
from attnlstm.data.tagging import TaggingVocab
from attnlstm.models.ensemble import TaggerEnsemble
from attnlstm.runs import LoadedRun

__all__ = ["load_tagger", "load_taggers", "taggers_of"]


def _tagger_of(run: LoadedRun) -> tuple[nn.Module, TaggingVocab, int]:
    """The model, vocabulary and ``task.max_word_chars`` of a loaded ``model=tagger`` run;
    ValueError if its task state holds no tagging vocabulary."""
    if run.cfg.model.name != "tagger" or "vocab" not in run.task_state:
        raise ValueError(f"{run.path} is a model={run.cfg.model.name} run, not a tagger")
    vocab = TaggingVocab.from_state_dict(run.task_state["vocab"])
    return run.model, vocab, int(run.cfg.task.max_word_chars)


def load_tagger(path: str | Path) -> tuple[nn.Module, TaggingVocab, int]:
    """The model (its evaluated weights, in eval mode), vocabulary and ``task.max_word_chars``
    of a ``model=tagger`` run folder (its best.pt, else last.pt) or checkpoint file.

    Raises:
        FileNotFoundError: no checkpoint at ``path``.
        ValueError: not an attnlstm checkpoint, or a run of another model.
    """
    return _tagger_of(open_run(path, "tagger"))


def taggers_of(runs: Sequence[LoadedRun]) -> tuple[nn.Module, TaggingVocab, int]:
    """The tagger of one loaded run, or the :class:`TaggerEnsemble` of several, with the
    vocabulary and ``task.max_word_chars`` they share.

    Args:
        runs: ``model=tagger`` runs (at least one); the first one's vocabulary is the
            ensemble's.

    Returns:
        (model in eval mode, vocabulary, max_word_chars).

    Raises:
        ValueError: a run is no tagger, or does not share the first one's vocabulary (see
            :meth:`TaggingVocab.matches`) and ``task.max_word_chars``.
    """
    if not runs:
        raise ValueError("no tagger run given")
    model, vocab, max_word_chars = _tagger_of(runs[0])
    if len(runs) == 1:
        return model, vocab, max_word_chars
    members = [model]
    for run in runs[1:]:
        member, member_vocab, member_chars = _tagger_of(run)
        if not member_vocab.matches(vocab) or member_chars != max_word_chars:
            raise ValueError(
                f"{run.path} was trained with another vocabulary than {runs[0].path}; an"
                " ensemble needs taggers of the same task and data settings (task.min_count,"
                " task.lowercase, task.max_word_chars)"
            )
        members.append(member)
    return TaggerEnsemble(members).eval(), vocab, max_word_chars


def load_taggers(paths: Sequence[str | Path]) -> tuple[nn.Module, TaggingVocab, int]:
    """:func:`load_tagger` for one path; for several, their :class:`TaggerEnsemble`.

    Args:
        paths: run folders or checkpoint files of ``model=tagger`` runs (at least one).

    Returns:
        (model in eval mode, the shared vocabulary, ``task.max_word_chars``).

    Raises:
        FileNotFoundError: no checkpoint at a path.
        ValueError: not a tagger checkpoint, or taggers of different vocabularies.
    """
    return taggers_of([open_run(path, "tagger") for path in paths])
