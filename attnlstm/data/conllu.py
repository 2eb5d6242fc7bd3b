"""A CoNLL-U reader for tagging: the words of each sentence and one tag per word.

CoNLL-U (https://universaldependencies.org/format.html): one word per line with 10 tab-separated
fields (ID FORM LEMMA UPOS XPOS FEATS HEAD DEPREL DEPS MISC), sentences separated by blank
lines, comment lines starting with ``#``. Two kinds of lines are not tagged words:

- multiword-token ranges, ID ``1-2`` (e.g. "don't" over the words "do" and "n't"): the
  surface token is skipped and its words, on the lines that follow, are read;
- empty nodes, ID ``8.1`` (enhanced dependencies): skipped.

Written here rather than taken from the ``conllu`` package because a malformed line must fail
with the file, the line number and what is wrong, which that parser does not report.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from attnlstm.data.textfile import read_lines
from attnlstm.errors import ConfigError

FIELDS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
_WORD_ID = re.compile(r"[1-9][0-9]*")
_RANGE_ID = re.compile(r"([1-9][0-9]*)-([1-9][0-9]*)")
_EMPTY_NODE_ID = re.compile(r"(0|[1-9][0-9]*)\.[1-9][0-9]*")


class ConlluError(ConfigError):
    """A malformed CoNLL-U line: the message names the file, the line and the problem (a
    ConfigError: the user fixes the file, and the runner prints it without a traceback)."""

    def __init__(self, path: Path | str, line_number: int, problem: str) -> None:
        super().__init__(f"{path}:{line_number}: {problem}")
        self.path, self.line_number, self.problem = str(path), line_number, problem


@dataclass(frozen=True)
class TaggedSentence:
    """The words of a sentence and their tags (equal lengths, at least one word); ``aux_tags``
    is a second tag column of the same words (e.g. XPOS beside UPOS) when one was read."""

    words: tuple[str, ...]
    tags: tuple[str, ...]
    aux_tags: tuple[str, ...] | None = None

    def __len__(self) -> int:
        return len(self.words)


def read_conllu(
    path: Path | str, tag_column: str = "upos", aux_column: str | None = None
) -> list[TaggedSentence]:
    """The tagged sentences of a CoNLL-U file; ``tag_column`` is ``upos`` or ``xpos``, and
    ``aux_column`` (the other one, or None) is read into ``aux_tags``.

    Raises:
        ConlluError: a line without 10 fields, an ID that is neither a word index, a range
            nor an empty node, word IDs out of order, an empty form, or a word without a tag.
        NotUtf8Error: bytes that are not UTF-8 (:mod:`attnlstm.data.textfile`), with the
            line.
    """
    for column in (tag_column, aux_column):
        if column not in ("upos", "xpos", None):
            raise ValueError(f"tag columns must be upos or xpos, got {column!r}")
    if tag_column is None or aux_column == tag_column:
        raise ValueError(f"tag_column={tag_column!r} and aux_column={aux_column!r}")
    aux_index = None if aux_column is None else FIELDS.index(aux_column)
    return list(_sentences(Path(path), FIELDS.index(tag_column), aux_index))


def _sentences(path: Path, tag_index: int, aux_index: int | None) -> Iterator[TaggedSentence]:
    words: list[str] = []
    tags: list[str] = []
    aux_tags: list[str] = []

    def sentence() -> TaggedSentence:
        return TaggedSentence(
            tuple(words), tuple(tags), None if aux_index is None else tuple(aux_tags)
        )

    expected_id = 1  # the ID the next word of the open sentence must have
    for line_number, raw in enumerate(read_lines(path, "utf-8-sig"), start=1):
        line = raw.rstrip("\n")
        if not line.strip():
            if words:
                yield sentence()
            words, tags, aux_tags, expected_id = [], [], [], 1
            continue
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != len(FIELDS):
            raise ConlluError(
                path,
                line_number,
                f"expected 10 tab-separated fields, found {len(fields)}"
                f"{' (spaces instead of tabs?)' if len(fields) == 1 else ''}",
            )
        word_id = fields[0]
        if _RANGE_ID.fullmatch(word_id) or _EMPTY_NODE_ID.fullmatch(word_id):
            if range_match := _RANGE_ID.fullmatch(word_id):
                first, last = map(int, range_match.groups())
                if first != expected_id or last <= first:
                    raise ConlluError(
                        path,
                        line_number,
                        f"multiword token range {word_id} does not span the next words"
                        f" (the next word is {expected_id})",
                    )
            continue  # a multiword token's surface form, or an empty node: not tagged
        if not _WORD_ID.fullmatch(word_id):
            raise ConlluError(
                path,
                line_number,
                f"ID {word_id!r} is not a word index (1, 2, ...), a multiword range (1-2)"
                " or an empty node (1.1)",
            )
        if int(word_id) != expected_id:
            raise ConlluError(
                path, line_number, f"word ID {word_id} out of order: expected {expected_id}"
            )
        form, tag = fields[1], fields[tag_index]
        if not form:
            raise ConlluError(path, line_number, "empty FORM")
        for index in (tag_index, aux_index):
            if index is not None and fields[index] in ("", "_"):
                raise ConlluError(
                    path, line_number, f"word {form!r} has no {FIELDS[index].upper()} tag"
                )
        words.append(form)
        tags.append(tag)
        if aux_index is not None:
            aux_tags.append(fields[aux_index])
        expected_id += 1
    if words:  # a file may end without the final blank line
        yield sentence()
