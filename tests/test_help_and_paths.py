"""A user's first hour: ``attnlstm-train --help``, its light launcher, where datasets go when
attnlstm is installed rather than checked out, and the licence the wheel carries."""

from __future__ import annotations

import ast
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import platformdirs
import pytest
import yaml

from attnlstm import paths
from attnlstm.data import download as dl
from attnlstm.launch import HELP_FIRST_LINE, wants_help
from tests.conftest import install_wheel_in_fresh_venv, run_cli

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
HELP_YAML = CONF / "hydra" / "help" / "attnlstm.yaml"

#: the groups a user chooses from: every folder of conf/ but Hydra's own settings
USER_GROUPS = sorted(p.name for p in CONF.iterdir() if p.is_dir() and p.name != "hydra")

#: ``attnlstm/__init__.py`` imports the attention library (torch) at once; while it does, every
#: ``attnlstm.*`` module, the launcher included, pulls torch in with the package
# --- the help template ------------------------------------------------------------------------


def help_template() -> str:
    return yaml.safe_load(HELP_YAML.read_text())["template"]


def listed_groups(template: str) -> dict[str, list[str]]:
    """The hand-written ``== Config groups ==`` section: ``{group: [options]}``, a group's
    options running on over indented continuation lines."""
    section = template.split("== Config groups", 1)[1].split("\n", 1)[1].split("\n\n", 1)[0]
    groups: dict[str, list[str]] = {}
    group = None
    for line in section.splitlines():
        match = re.match(r"^  (\w+)\s+(.*)$", line)
        if match:
            group, options = match.groups()
        elif group is not None and line.startswith("    "):
            options = line
        else:
            group = None
            continue
        groups.setdefault(group, []).extend(o.strip() for o in options.split(",") if o.strip())
    return groups


def test_the_help_lists_every_group_and_option_of_conf() -> None:
    """The list is written by hand (Hydra's $APP_CONFIG_GROUPS shows the schema/* groups too):
    a group or option added to conf/ and not to the help fails here."""
    listed = listed_groups(help_template())
    assert sorted(listed) == USER_GROUPS
    for group, options in listed.items():
        assert options == sorted(p.stem for p in (CONF / group).glob("*.yaml")), group


def test_the_help_names_the_default_choices() -> None:
    defaults = yaml.safe_load((CONF / "train.yaml").read_text())["defaults"]
    chosen = {k: v for d in defaults if isinstance(d, dict) for k, v in d.items()}
    default_run = next(line for line in help_template().splitlines() if "the default run" in line)
    for group in ("task", "model", "attention"):
        assert f"{group}={chosen[group]}" in default_run


def test_the_launcher_recognises_a_request_for_help() -> None:
    assert wants_help(["--help"]) and wants_help(["model=lstm", "-h"])
    assert not wants_help([]) and not wants_help(["--hydra-help"])
    assert not wants_help(["--cfg", "job", "task.name=help"])


def _module_level_imports(path: Path) -> set[str]:
    """The modules ``path`` imports at module level (the trainer is imported inside main())."""
    names = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_the_launcher_imports_the_standard_library_only() -> None:
    """launch.py imports the standard library, attnlstm.runtime, attnlstm.sigint and
    attnlstm.console, which import the standard library only (OpenMP's threads must be set
    before torch loads, and Ctrl-C is handled from the start)."""
    stdlib = set(sys.stdlib_module_names)
    launcher = _module_level_imports(REPO / "attnlstm" / "launch.py")
    light = {"attnlstm.runtime", "attnlstm.sigint", "attnlstm.console"}
    assert {name for name in launcher if name.split(".")[0] not in stdlib} == light
    for module in light:
        imported = _module_level_imports(REPO / "attnlstm" / f"{module.split('.')[1]}.py")
        assert {name.split(".")[0] for name in imported} <= stdlib, (module, imported)


def test_importing_the_launcher_does_not_import_torch() -> None:
    result = subprocess.run(
        [sys.executable, "-c", "import attnlstm.launch, sys; print('torch' in sys.modules)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert result.stdout.strip() == "False"


@pytest.mark.parametrize("flag", ["--help", pytest.param("-h", marks=pytest.mark.slow)])
def test_help_shows_groups_examples_runs_and_exit_codes(tmp_path: Path, flag: str) -> None:
    text = run_cli([flag], tmp_path).stdout
    lines = text.rstrip("\n").splitlines()
    assert lines[0] == HELP_FIRST_LINE and text.count(HELP_FIRST_LINE) == 1 and lines[1] == ""
    assert len(lines) <= 60, len(lines)
    assert "schema/" not in text and "$" not in text.replace("$ATTNLSTM_DATA", "")
    for group in USER_GROUPS:
        assert re.search(rf"^  {group}\s", text, re.MULTILINE), group
    for example in (
        "attnlstm-train   ",
        "attnlstm-train model=lstm_attn attention=dot task=multiplication",
        "attnlstm-train -m attention=dot,general,concat",
        "attnlstm-train resume=<run dir> trainer.max_epochs=",
        "attnlstm-train experiment=sst2",
        "outputs/<task>/<model>-<attention>/<timestamp>",
        "outputs/multirun/",
        "attnlstm-compare outputs/",
        "tensorboard --logdir outputs",
        "$ATTNLSTM_DATA",
    ):
        assert example in text, example
    codes = dict(re.findall(r"^  (\d+)\s+(\w+)", text, re.MULTILINE))
    assert codes == {
        "0": "done",
        "1": "failed",
        "2": "bad",
        "3": "diverged",
        "130": "interrupted",
        "141": "output",
    }
    assert not list(tmp_path.iterdir())  # help makes no run folder


# --- the data directory -----------------------------------------------------------------------


def fake_layout(tmp_path: Path, monkeypatch, *, checkout: bool, shared: bool) -> Path:
    """Point :mod:`attnlstm.paths` at a package folder under ``tmp_path`` (a source checkout
    when ``checkout``, else a ``site-packages`` folder), with ``../shared/data`` beside it
    when ``shared``, and the per-user data folder at ``tmp_path/user``. Returns that folder's
    ``data``."""
    monkeypatch.delenv("ATTNLSTM_DATA", raising=False)
    root = tmp_path / ("work" if checkout else "venv/lib/python3/site-packages")
    (root / "repo" / "attnlstm").mkdir(parents=True)
    if checkout:
        (root / "repo" / "pyproject.toml").write_text("[project]\nname = 'attnlstm'\n")
    if shared:
        (root / "shared" / "data").mkdir(parents=True)
    monkeypatch.setattr(paths, "_PACKAGE_DIR", root / "repo" / "attnlstm")
    monkeypatch.setattr(platformdirs, "user_data_dir", lambda *a, **k: str(tmp_path / "user"))
    return tmp_path / "user" / "data"


def test_a_checkout_with_shared_data_reads_it(tmp_path: Path, monkeypatch) -> None:
    fake_layout(tmp_path, monkeypatch, checkout=True, shared=True)
    assert paths.data_dir() == tmp_path / "work" / "shared" / "data"
    assert paths.data_dir_origin() == "the checkout's ../shared/data"


@pytest.mark.parametrize(
    ("checkout", "shared"),
    [(False, True), (False, False), (True, False)],
    ids=["installed-beside-a-shared-folder", "installed", "checkout-without-shared-data"],
)
def test_otherwise_the_per_user_data_folder(
    tmp_path: Path, monkeypatch, checkout: bool, shared: bool
) -> None:
    user = fake_layout(tmp_path, monkeypatch, checkout=checkout, shared=shared)
    assert paths.data_dir() == user
    assert paths.data_dir_origin() == "the per-user data folder"


def test_the_config_key_then_the_environment_come_first(tmp_path: Path, monkeypatch) -> None:
    fake_layout(tmp_path, monkeypatch, checkout=True, shared=True)
    monkeypatch.setenv("ATTNLSTM_DATA", str(tmp_path / "env"))
    assert paths.data_dir() == tmp_path / "env"
    assert paths.data_dir_origin() == "$ATTNLSTM_DATA"
    assert paths.data_dir(str(tmp_path / "key")) == tmp_path / "key"
    assert paths.data_dir_origin(str(tmp_path / "key")) == "data_dir="


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG is Linux's convention")
def test_the_per_user_folder_follows_xdg_data_home(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert paths.user_data_dir() == tmp_path / "xdg" / "attnlstm" / "data"


# --- attnlstm-download ------------------------------------------------------------------------


def remote_for_bytes(tmp_path: Path, payload: bytes) -> dl.RemoteFile:
    """A one-file dataset served from a ``file://`` URL (no network)."""
    source = tmp_path / "source" / "a.txt"
    source.parent.mkdir(parents=True, exist_ok=True)
    source.write_bytes(payload)
    return dl.RemoteFile("a.txt", source.as_uri(), hashlib.sha256(payload).hexdigest())


def test_download_writes_to_the_default_folder_and_says_where(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    user = fake_layout(tmp_path, monkeypatch, checkout=False, shared=False)
    monkeypatch.setattr(dl, "DATASETS", {"toy": [remote_for_bytes(tmp_path, b"hi\n")]})
    assert dl.main(["toy"]) == 0
    assert (user / "toy" / "a.txt").read_bytes() == b"hi\n"
    out = capsys.readouterr().out
    assert f"data directory: {user} (the per-user data folder)" in out
    assert f"done: written to {user}, where attnlstm-train looks by default" in out


def test_download_elsewhere_says_how_to_point_attnlstm_at_it(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    fake_layout(tmp_path, monkeypatch, checkout=False, shared=False)
    monkeypatch.setattr(dl, "DATASETS", {"toy": [remote_for_bytes(tmp_path, b"hi\n")]})
    assert dl.main(["toy", "--dest", str(tmp_path / "mine")]) == 0
    out = capsys.readouterr().out
    assert f"data directory: {tmp_path / 'mine'} (--dest)" in out
    assert f"ATTNLSTM_DATA={tmp_path / 'mine'}" in out


def test_download_help_names_the_default_folder(tmp_path: Path, monkeypatch, capsys) -> None:
    user = fake_layout(tmp_path, monkeypatch, checkout=False, shared=False)
    monkeypatch.setenv("COLUMNS", "1000")  # no wrapping, not even at a path's hyphens
    with pytest.raises(SystemExit):
        dl.main(["--help"])
    out = capsys.readouterr().out
    assert f"per-user folder {user}; here: {user}" in out


def test_missing_data_names_where_the_data_directory_came_from(tmp_path: Path, monkeypatch) -> None:
    user = fake_layout(tmp_path, monkeypatch, checkout=False, shared=False)
    with pytest.raises(dl.ConfigError) as error:
        dl.locate_files("lm_ptb", "ptb", ["ptb.train.txt"], None)
    message = str(error.value)
    assert f"data directory {user}, from the per-user data folder" in message
    assert "attnlstm-download ptb" in message


# --- the licence, and all of it installed -----------------------------------------------------


def test_the_mit_licence_is_there() -> None:
    text = (REPO / "LICENSE").read_text()
    assert text.startswith("MIT License") and "Copyright (c) 2026 the attnlstm authors" in text
    assert 'license = "MIT"' in (REPO / "pyproject.toml").read_text()


@pytest.mark.slow
def test_the_installed_wheel_carries_the_licence_help_and_per_user_data(tmp_path: Path) -> None:
    env_dir = install_wheel_in_fresh_venv(tmp_path)
    wheel = next((tmp_path / "dist").glob("attnlstm-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        assert any(n.endswith(".dist-info/licenses/LICENSE") for n in archive.namelist())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ATTNLSTM_DATA")}
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg")
    where = subprocess.run(
        [str(env_dir / "bin" / "python"), "-c", "import attnlstm.paths as p; print(p.data_dir())"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout.strip()
    assert where == str(tmp_path / "xdg" / "attnlstm" / "data")
    shown = subprocess.run(
        [str(env_dir / "bin" / "attnlstm-train"), "--help"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
        env=env,
    ).stdout
    assert shown.splitlines()[0] == HELP_FIRST_LINE and "experiment=sst2" in shown
