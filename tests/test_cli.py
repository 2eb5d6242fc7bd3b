"""Command-line surface: sweeps, the compare command, devices, and the installed wheel."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from attnlstm.compare import main as compare_main
from attnlstm.errors import ConfigError
from attnlstm.training.device import resolve_device
from tests.conftest import TINY, install_wheel_in_fresh_venv, run_cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A two-by-two multirun: attention method x learning rate."""
    cwd = tmp_path_factory.mktemp("sweep")
    args = [
        "-m",
        *TINY,
        "trainer.attention_images=0",
        "attention=dot,feedforward",
        "optim.lr=0.01,0.003",
    ]
    run_cli(args, cwd)
    sweeps = list((cwd / "outputs" / "multirun").iterdir())
    assert len(sweeps) == 1
    return sweeps[0]


def test_multirun_job_directories_are_named_by_overrides(sweep: Path) -> None:
    jobs = sorted(p.name for p in sweep.iterdir() if (p / "metrics.json").exists())
    assert len(jobs) == 4
    # Hydra's override_dirname: every override of the job, sorted, "key=value" joined by ","
    named = {
        tuple(o for o in job.split(",") if o.startswith(("attention=", "optim.lr=")))
        for job in jobs
    }
    assert named == {
        ("attention=dot", "optim.lr=0.003"),
        ("attention=dot", "optim.lr=0.01"),
        ("attention=feedforward", "optim.lr=0.003"),
        ("attention=feedforward", "optim.lr=0.01"),
    }
    assert all("task.min_length=20" in job and "device" not in job for job in jobs)
    job_dir = {n: sweep / j for j in jobs for n in named if all(o in j.split(",") for o in n)}
    config = (job_dir[("attention=dot", "optim.lr=0.01")] / "config.yaml").read_text()
    assert "method: dot" in config and "lr: 0.01" in config


def test_compare_prints_a_sorted_markdown_table_and_a_plot(
    sweep: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plot = sweep / "curves.png"
    assert (
        compare_main([str(sweep), "--sort", "test/loss", "--ascending", "--plot", str(plot)]) == 0
    )
    lines = capsys.readouterr().out.strip().splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    assert header[:3] == ["run", "attention.method", "optim.lr"]
    assert "test/accuracy" in header and "test/loss" in header
    assert "model.name" not in header  # the same in every run: not a differing key
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert len(rows) == 4
    losses = [float(row[header.index("test/loss")]) for row in rows]
    assert losses == sorted(losses)
    expected = {
        json.loads((sweep / row[0] / "metrics.json").read_text())["test"]["test/loss"]
        for row in rows
    }
    assert {round(x, 5) for x in expected} == {round(x, 5) for x in losses}
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000


def test_compare_csv_and_default_sort(sweep: Path, tmp_path: Path) -> None:
    result = run_cli(
        [str(sweep), "--format", "csv", "--no-plot"], tmp_path, module="attnlstm.compare"
    )
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 4
    # one group per config (one seed each): the mean is the run's value, the std empty
    assert all(r["n"] == "1" and r["test/accuracy_std"] == "" for r in rows)
    accuracies = [float(r["test/accuracy_mean"]) for r in rows]
    assert accuracies == sorted(accuracies, reverse=True)  # the monitor, best first


def test_compare_explains_bad_input(tmp_path: Path, sweep: Path) -> None:
    with pytest.raises(SystemExit):
        compare_main([str(tmp_path)])  # no runs there
    with pytest.raises(SystemExit, match="cannot sort by 'test/bleu'"):
        compare_main([str(sweep), "--sort", "test/bleu", "--no-plot"])


@pytest.mark.slow  # several jobs; test_multirun_job_directories_are_named_by_overrides stays
def test_default_attention_sweep_composes(tmp_path: Path) -> None:
    """The README's sweep over every method, dry-run with --cfg to keep it fast."""
    for method in ("dot", "general", "concat", "additive", "feedforward", "scaled_dot"):
        result = run_cli([f"attention={method}", "--cfg", "job"], tmp_path)
        assert f"method: {method}" in result.stdout


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_gpu_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="device=cuda was chosen, but PyTorch finds no CUDA"):
        resolve_device("cuda", 0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_auto_falls_back_to_cpu_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        assert resolve_device("auto", 0) == torch.device("cpu")
    assert "no CUDA GPU found, training on the CPU" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_device_and_index() -> None:
    count = torch.cuda.device_count()
    assert resolve_device("cuda", 0) == torch.device("cuda", 0)
    assert resolve_device("auto", 0) == torch.device("cuda", 0)
    with pytest.raises(ConfigError, match="valid indices"):
        resolve_device("cuda", count)


def test_module_and_console_script_agree(tmp_path: Path) -> None:
    script = Path(sys.executable).with_name("attnlstm-train")
    if not script.exists():
        pytest.skip("attnlstm-train is not installed beside this Python")
    via_module = run_cli(["--cfg", "job"], tmp_path).stdout
    via_script = subprocess.run(
        [str(script), "--cfg", "job"], cwd=tmp_path, text=True, capture_output=True, check=True
    ).stdout
    assert via_module == via_script


@pytest.mark.slow
def test_built_wheel_finds_its_configs_from_another_directory(tmp_path: Path) -> None:
    """Build the wheel, install it into a fresh venv (reusing this torch), train from /tmp."""
    env_dir = install_wheel_in_fresh_venv(tmp_path)
    python = env_dir / "bin" / "python"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    clean_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    where = subprocess.run(
        [
            str(python),
            "-c",
            "import attnlstm, attnlstm.paths as p; print(attnlstm.__file__); print(p.config_dir())",
        ],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
        env=clean_env,
    ).stdout.split()
    assert where[0].startswith(str(env_dir)) and where[1].startswith(str(env_dir))
    result = subprocess.run(
        [str(env_dir / "bin" / "attnlstm-train"), *TINY, "trainer.max_epochs=1"],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        env=clean_env,
    )
    assert result.returncode == 0, result.stderr
    assert list((elsewhere / "outputs").rglob("metrics.json"))


def test_long_job_names_are_shortened() -> None:
    from attnlstm.runfolder import job_dirname

    assert job_dirname("attention=dot,optim.lr=0.01") == "attention=dot,optim.lr=0.01"
    long_name = ",".join(f"task.key{i}=value{i}" for i in range(40))
    short = job_dirname(long_name)
    assert len(short.encode()) < 255 and short.startswith("task.key0=value0")
    assert short != job_dirname(long_name + ",x=1")


def test_sweep_skips_an_incompatible_combination_and_goes_on(tmp_path: Path) -> None:
    result = run_cli(
        ["-m", *TINY, "trainer.max_epochs=1", "model=lstm,lstm_attn", "attention=dot"], tmp_path
    )
    assert "skipped job" in result.stderr and "model=lstm uses no attention" in result.stderr
    finished = list((tmp_path / "outputs" / "multirun").rglob("metrics.json"))
    assert [p.parent.name.startswith("attention=dot") for p in finished] == [True]
    assert "model=lstm_attn" in finished[0].parent.name
    jobs = [p for p in next((tmp_path / "outputs" / "multirun").iterdir()).iterdir() if p.is_dir()]
    assert len(jobs) == 1  # the skipped job left no folder behind
