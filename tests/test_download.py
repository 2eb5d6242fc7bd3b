"""The dataset downloader: sha256 checks, atomic writes, never overwriting a user's file.
Uses file:// URLs, so it runs without a network."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from attnlstm.data import download as dl

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "README.md"


def remote_for(tmp_path: Path, text: bytes, name: str = "a.txt") -> dl.RemoteFile:
    source = tmp_path / "source" / name
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(text)
    return dl.RemoteFile(name, source.as_uri(), hashlib.sha256(text).hexdigest())


def test_downloads_and_checks_the_sha256(tmp_path: Path) -> None:
    remote = remote_for(tmp_path, b"hello\n")
    target = dl.download_file(remote, tmp_path / "data", log=lambda _: None)
    assert target.read_bytes() == b"hello\n"
    assert not list((tmp_path / "data").glob(".*.tmp"))
    # present with the right sum: kept, nothing fetched
    dl.download_file(remote, tmp_path / "data", log=lambda _: None)


def test_a_wrong_sha256_writes_nothing(tmp_path: Path) -> None:
    remote = remote_for(tmp_path, b"hello\n")
    bad = dl.RemoteFile(remote.name, remote.url, "0" * 64)
    with pytest.raises(dl.ChecksumError, match="nothing was written"):
        dl.download_file(bad, tmp_path / "data", log=lambda _: None)
    assert not (tmp_path / "data" / "a.txt").exists()


def test_an_existing_different_file_is_never_overwritten(tmp_path: Path) -> None:
    remote = remote_for(tmp_path, b"hello\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_bytes(b"my own edits\n")
    with pytest.raises(dl.ChecksumError, match="left as it is"):
        dl.download_file(remote, tmp_path / "data", log=lambda _: None)
    assert (tmp_path / "data" / "a.txt").read_bytes() == b"my own edits\n"


def test_a_member_of_a_zip_archive(tmp_path: Path) -> None:
    archive = tmp_path / "data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/eng-fra.txt", "Go.\tVa !\n")
    payload = b"Go.\tVa !\n"
    remote = dl.RemoteFile(
        "eng-fra.txt", archive.as_uri(), hashlib.sha256(payload).hexdigest(), "data/eng-fra.txt"
    )
    target = dl.download_file(remote, tmp_path / "out", log=lambda _: None)
    assert target.read_bytes() == payload


def test_unknown_dataset_names_are_refused(tmp_path: Path) -> None:
    assert dl.main(["no-such-set", "--dest", str(tmp_path)]) == 1


def test_the_sums_are_those_of_the_shared_data_readme() -> None:
    if not SHARED.is_file():
        pytest.skip(f"{SHARED} not found")
    readme = SHARED.read_text()
    for folder, files in dl.DATASETS.items():
        for remote in files:
            if remote.name == "LICENSE.txt" and folder != "ud-english-ewt":
                continue
            assert f"{remote.sha256}  {folder}/{remote.name}" in readme, remote.name
