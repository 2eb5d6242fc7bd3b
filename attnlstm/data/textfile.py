"""Reading the datasets' text files as UTF-8, with a plain sentence for a file that is not.

Every reader of :mod:`attnlstm.data` (CoNLL-U, language-model corpora, sentence pairs,
labelled TSV/CSV) reads its lines through :func:`read_lines`. Python's own
``UnicodeDecodeError`` names neither the file nor the line (its position counts from the start
of whichever chunk the decoder was reading); :class:`NotUtf8Error` names the file, the line,
the byte's offset in the file and its value, and how to re-encode the file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from attnlstm.errors import ConfigError

__all__ = ["NotUtf8Error", "read_lines"]

#: the line breaks of universal-newline reading (``newline=None`` or ``""``): line numbers
#: count these, as the readers' own ``enumerate(handle)`` and ``csv``'s ``line_num`` do
_LINE_BREAK = re.compile(rb"\r\n|\r|\n")


class NotUtf8Error(ConfigError):
    """A data file holding bytes that are not UTF-8; the message names the file, the line,
    the byte's offset and value, and the command that re-encodes the file."""


def read_lines(
    path: Path | str, encoding: str = "utf-8", newline: str | None = None
) -> Iterator[str]:
    """The lines of a text file, as ``open(path, encoding=encoding, newline=newline)`` yields
    them (``encoding``: ``utf-8``, or ``utf-8-sig`` to drop a leading byte-order mark).

    Raises:
        NotUtf8Error: at the first byte that is not UTF-8, after the lines before it were
            yielded.
        OSError: the file cannot be opened.
    """
    try:
        with open(path, encoding=encoding, newline=newline) as handle:
            yield from handle
    except UnicodeDecodeError:
        # located again from the raw bytes: the decoder's position is relative to its chunk
        raise _locate(Path(path)) from None


def _locate(path: Path) -> NotUtf8Error:
    """The error for the first byte of ``path`` that is not UTF-8. Read whole, once, on the
    failure path only: the bytes before it decode, so their line breaks give its line."""
    data = path.read_bytes()
    try:
        data.decode("utf-8")  # a byte-order mark is valid UTF-8: offsets count it as bytes
    except UnicodeDecodeError as error:
        line = len(_LINE_BREAK.findall(data, 0, error.start)) + 1
        where = f"0x{data[error.start]:02X} on line {line}, offsets from 0: {error.reason}"
        offset = error.start
    else:  # it decodes now: the file was changed after the failed read
        where, offset = "the file changed while it was read", 0
    utf8 = path.with_name(f"{path.stem}.utf8{path.suffix}").name
    return NotUtf8Error(
        f"{path}: byte {offset} is not UTF-8 ({where}); re-encode the file as UTF-8, e.g."
        f" `iconv -f latin1 -t utf-8 {path.name} > {utf8}` for a Latin-1 file, then put that"
        " in its place"
    )
