"""attnlstm/benchmark.py (busy neighbours, the idle / busy table) and the scripts/bench_*.py
that use it: each script runs at its smallest sizes, idle and beside one busy process."""

from __future__ import annotations

import importlib.util
import math
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnlstm.benchmark import BusyNeighbours, idle_and_busy, print_ratio_table

REPO = Path(__file__).resolve().parents[1]
CONLLU = REPO / "tests" / "fixtures" / "conllu"


# --- attnlstm/benchmark.py ------------------------------------------------------------------


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds that process ``pid`` has used so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def _neighbours() -> list[int]:
    """Pids of this process's live busy neighbours: children running ``python -S -c <loop>``
    (a killed, reaped child is gone from /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().split(b"\0")
        except OSError:  # the process ended meanwhile
            continue
        if int(fields[1]) == os.getpid() and cmdline[1:3] == [b"-S", b"-c"]:
            pids.append(int(stat.parent.name))
    return pids


pytestmark_linux = pytest.mark.skipif(
    not Path("/proc/self/stat").is_file(), reason="reads the neighbours from /proc (Linux)"
)


@pytestmark_linux
def test_busy_neighbours_spin_while_open_and_stop_at_exit() -> None:
    with BusyNeighbours(1) as busy:
        assert _neighbours() == busy.pids and len(busy.pids) == 1
        cpu, wall = _cpu_seconds(busy.pids[0]), time.perf_counter()
        time.sleep(1.0)
        used = _cpu_seconds(busy.pids[0]) - cpu
        elapsed = time.perf_counter() - wall
    # one core's worth of pure Python: most of a second, unless the machine is very busy
    assert used > 0.2, f"the neighbour used {used:.2f} s of CPU in {elapsed:.2f} s"
    assert _neighbours() == []


@pytestmark_linux
def test_busy_neighbours_stop_when_the_block_raises() -> None:
    with pytest.raises(RuntimeError, match="measuring failed"), BusyNeighbours(2):
        assert len(_neighbours()) == 2
        raise RuntimeError("measuring failed")
    assert _neighbours() == []


def test_busy_neighbours_zero_starts_nothing_and_a_negative_count_is_refused() -> None:
    started = time.perf_counter()
    with BusyNeighbours(0) as busy:
        assert busy.pids == []
    assert time.perf_counter() - started < 0.3  # no start-up wait without neighbours
    with pytest.raises(ValueError, match="--busy"):
        BusyNeighbours(-1)
    with pytest.raises(ValueError, match="busy"):
        idle_and_busy(lambda: {"x": 1.0}, -1)


def test_print_ratio_table_gives_busy_over_idle(capsys: pytest.CaptureFixture[str]) -> None:
    print_ratio_table({"fast": 200.0, "slow": 50.0}, {"fast": 50.0, "slow": 60.0}, "items/s", 2)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| what | idle items/s | beside 2 busy processes | busy / idle |"
    assert lines[2:] == ["| fast | 200 | 50 | 0.25x |", "| slow | 50 | 60 | 1.20x |"]


def test_print_ratio_table_idle_only(capsys: pytest.CaptureFixture[str]) -> None:
    print_ratio_table({"fast": 200.0}, None, "items/s", 0)
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines == ["| what | idle items/s |", "|---|---:|", "| fast | 200 |"]


def test_idle_and_busy_without_neighbours_measures_once() -> None:
    calls: list[int] = []

    def measure() -> dict[str, float]:
        calls.append(1)
        return {"x": 3.0}

    assert idle_and_busy(measure, 0) == ({"x": 3.0}, None)
    assert len(calls) == 1


@pytestmark_linux
def test_idle_and_busy_measures_again_beside_the_neighbours() -> None:
    neighbours_seen: list[int] = []

    def measure() -> dict[str, float]:
        neighbours_seen.append(len(_neighbours()))
        return {"x": float(len(neighbours_seen))}

    assert idle_and_busy(measure, 1) == ({"x": 1.0}, {"x": 2.0})
    assert neighbours_seen == [0, 1]
    assert _neighbours() == []


# --- scripts/bench_scaleout.py's options (docs/sweeps.md cites --neighbour) -------------------


def _load_script(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_scaleout_busy_option_and_the_neighbour_alias() -> None:
    parse_args = _load_script("bench_scaleout").parse_args
    assert parse_args([]).busy == 1
    assert parse_args(["--busy", "0"]).busy == 0
    assert parse_args(["--busy", "3"]).busy == 3
    assert parse_args(["--neighbour"]).busy == 1  # docs/sweeps.md's command


# --- the scripts, at their smallest sizes -----------------------------------------------------

ROW = re.compile(r"^\| (.+?) \| (\S+) \| (\S+) \| (\S+)x \|$")


def run_script(name: str, *args: str) -> str:
    """``python scripts/<name>.py <args>`` on one thread; its output (the test fails on rc != 0)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / f"{name}.py"), *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    return result.stdout


def busy_over_idle(output: str, neighbours: int = 1) -> dict[str, float]:
    """The rows of the output's "busy / idle" table: what -> busy / idle (all finite, > 0)."""
    lines = output.splitlines()
    plural = "es" if neighbours != 1 else ""
    header = f"beside {neighbours} busy process{plural} | busy / idle |"
    (start,) = [i for i, line in enumerate(lines) if line.startswith("| what |") and header in line]
    assert lines[start + 1] == "|---|---:|---:|---:|"
    ratios = {}
    for line in lines[start + 2 :]:
        match = ROW.match(line)
        if not match:
            break
        name, idle, busy, ratio = match.groups()
        assert float(busy) / float(idle) == pytest.approx(float(ratio), abs=0.01, rel=0.01)
        ratios[name] = float(ratio)
    assert ratios and all(math.isfinite(r) and r > 0 for r in ratios.values()), ratios
    return ratios


def test_busy_over_idle_reads_the_table() -> None:
    output = "\n".join(
        [
            "machine: ...",
            "| what | idle x/s | beside 1 busy process | busy / idle |",
            "|---|---:|---:|---:|",
            "| (a) one | 100 | 50 | 0.50x |",
            "| (b) two | 4.5e+04 | 4.5e+04 | 1.00x |",
            "",
            "after",
        ]
    )
    assert busy_over_idle(output) == {"(a) one": 0.5, "(b) two": 1.0}
    with pytest.raises(AssertionError):
        busy_over_idle(output.replace("0.50x", "0.80x"))  # not busy / idle
    with pytest.raises(AssertionError):
        busy_over_idle(output.replace("| 50 | 0.50x", "| nan | nanx"))  # not finite
    with pytest.raises(ValueError):
        busy_over_idle("| what | idle x/s |\n|---|---:|\n| (a) one | 100 |")  # no busy table


@pytest.mark.slow
def test_bench_lm_smoke() -> None:
    output = run_script(
        "bench_lm",
        *("--size", "4", "--layers", "1", "--batch", "2", "--bptt", "3", "--window", "2"),
        *("--dropout", "0", "--updates", "1", "--naive-updates", "1", "--rounds", "1"),
        *("--busy", "1"),
    )
    assert list(busy_over_idle(output)) == [
        "(a) pytorch/examples loop",
        "(b) ours, attention=none",
        "(c) ours, attention=general",
        "(d) per-step Python loop",
    ]
    for ratio in ("(b)/(a)", "(c)/(a)", "(c)/(b)", "(c)/(d)"):
        assert re.search(rf"{re.escape(ratio)} = idle [\d.]+x, busy [\d.]+x", output), output
    assert output.startswith("machine: ")


@pytest.mark.slow
def test_bench_seq2seq_smoke() -> None:
    output = run_script(
        "bench_seq2seq",
        *("--hidden", "4", "--embedding", "4", "--batch", "2", "--min-length", "2"),
        *("--max-length", "3", "--updates", "1", "--slow-updates", "1", "--rounds", "1"),
        *("--busy", "1"),
    )
    assert list(busy_over_idle(output)) == [
        "(a) Luong, one call for all steps",
        "(b) Luong, step loop",
        "(c) Luong, loop over batch and source",
        "(d) Bahdanau additive, step loop",
    ]
    for ratio in ("(a)/(b)", "(a)/(c)"):
        assert re.search(rf"{re.escape(ratio)} = idle [\d.]+x, busy [\d.]+x", output), output
    assert output.startswith("machine: ")


@pytest.mark.slow
def test_bench_tagger_smoke() -> None:
    # the experiment=pos_ewt model, shrunk, over the CoNLL-U fixture instead of UD English EWT
    output = run_script(
        "bench_tagger",
        *("--updates", "1", "--rounds", "1", "--busy", "1"),
        f"task.path={CONLLU}",
        "task.train_file=train.conllu",
        "task.valid_file=dev.conllu",
        "task.test_file=test.conllu",
        "task.batch_size=1",  # the fixture's 4 sentences: a warm-up batch and timed ones
        "model.word_embedding_size=4",
        "model.char_embedding_size=4",
        "model.char_hidden_size=4",
        "model.hidden_size=4",
        "model.num_layers=1",
    )
    assert list(busy_over_idle(output)) == [
        "(a) distinct forms, length buckets",
        "(b) distinct forms, one padded batch",
        "(c) every word, one padded batch",
    ]
    for ratio in ("(a)/(b)", "(a)/(c)"):
        assert re.search(rf"{re.escape(ratio)} = idle [\d.]+x, busy [\d.]+x", output), output
    assert output.startswith("machine: ")


@pytest.mark.slow
def test_bench_lstm_packing_smoke() -> None:
    output = run_script(
        "bench_lstm_packing",
        *("--batch", "2", "--min-length", "3", "--hidden", "4", "--repeats", "1", "--busy", "1"),
    )
    assert list(busy_over_idle(output)) == ["packed nn.LSTM", "MaskedLSTM"]
    assert re.search(r"MaskedLSTM is faster: idle [\d.]+x, busy [\d.]+x", output), output
    assert output.startswith("machine: ")


def test_bench_lstm_packing_busy_0_measures_idle_only() -> None:
    output = run_script(
        "bench_lstm_packing",
        *("--batch", "2", "--min-length", "3", "--hidden", "4", "--repeats", "1", "--busy", "0"),
    )
    assert "busy" not in output
    assert "| what | idle updates/s |" in output
    assert re.search(r"MaskedLSTM is [\d.]+x faster", output), output


@pytest.mark.slow
def test_bench_scaleout_smoke() -> None:
    # bf16 only (two training runs per condition), on the tiny addition problem
    output = run_script(
        "bench_scaleout",
        *("--only", "bf16", "--busy", "1", "--work"),
        "task.min_length=20",
        "task.batch_size=16",
        "task.batches_per_epoch=2",
        "task.eval_size=16",
        "task.eval_batch_size=16",
        "model.hidden_size=8",
        "model.head_size=8",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        "trainer.attention_images=0",
        "device=cpu",
    )
    assert list(busy_over_idle(output)) == [
        "precision: float32 (samples/s)",
        "precision: bf16 autocast (samples/s)",
    ]
    assert re.search(r"precision, bf16 / float32: idle [\d.]+x, busy [\d.]+x", output), output
    assert output.startswith("machine: ")


@pytest.mark.slow
def test_bench_long_smoke() -> None:
    output = run_script(
        "bench_long", *("--lengths", "100", "--batch", "4", "--repeats", "1", "--busy", "1")
    )
    assert list(busy_over_idle(output)) == ["T0 = 100, plain", "T0 = 100, chunked"]
    assert re.search(r"chunked / plain speed-up idle [\d.]+x, beside 1 busy [\d.]+x", output)
    assert output.startswith("machine: ")


@pytest.mark.slow
def test_bench_threading_smoke() -> None:
    output = run_script(
        "bench_threading",
        *("--workloads", "addition", "--policies", "spin", "passive", "--updates", "1"),
        *("--busy", "1"),
    )
    assert list(busy_over_idle(output)) == ["addition, spin", "addition, passive"]
    assert re.search(r"- addition: spin [\d.]+x, passive [\d.]+x", output), output


@pytest.mark.slow
def test_pooling_floor_smoke() -> None:
    output = run_script("pooling_floor", *("--length", "100", "--repeats", "1", "--busy", "1"))
    floor = re.search(r"floor: ([\d.]+) ms \(arithmetic ([\d.]+) ms, memory ([\d.]+) ms\)", output)
    assert floor is not None, output
    assert float(floor[1]) == max(float(floor[2]), float(floor[3]))
    rows = re.findall(r"^\| (idle|beside 1 busy) \| (chunked|plain) \| ([\d.]+) \|", output, re.M)
    assert [row[:2] for row in rows] == [
        ("idle", "chunked"),
        ("idle", "plain"),
        ("beside 1 busy", "chunked"),
        ("beside 1 busy", "plain"),
    ]


@pytest.mark.slow
@pytest.mark.skipif(not (REPO / ".git").exists(), reason="reads an earlier revision with git")
def test_bench_fused_kernel_smoke() -> None:
    """The earlier revision's kernel (here HEAD) against the working tree's, idle and busy."""
    try:
        output = run_script(
            "bench_fused_kernel",
            *("--against", "HEAD", "--lengths", "100", "--rounds", "1", "--repeats", "1"),
            *("--busy", "1"),
        )
    except AssertionError as error:
        if "does not build here" in str(error):
            pytest.skip("the fused pooling kernel cannot be built here (no C++ compiler/ninja)")
        raise
    assert list(busy_over_idle(output)) == ["T0 = 100, HEAD", "T0 = 100, now"]
    assert re.search(r"T0 = 100, idle: now / HEAD = [\d.]+x the updates/s", output), output
    assert re.search(r"T0 = 100, beside 1 busy: now / HEAD = [\d.]+x", output), output


@pytest.mark.slow
def test_bench_runner_smoke() -> None:
    from tests.conftest import TINY

    work = [arg for arg in TINY if not arg.startswith("trainer.progress_bar")]
    output = run_script("bench_runner", "--busy", "1", "--work", *work, "trainer.max_epochs=1")
    rows = re.findall(
        r"^\| (idle|beside 1 busy) \| (governed|fixed, \d+ threads) \| ([\d.]+) \| ([\d.]+)"
        r" \| ([\d.]+) \| ([\d.]+)x \|$",
        output,
        re.M,
    )
    assert [row[:2] for row in rows] == [
        ("idle", "governed"),
        ("idle", f"fixed, {rows[1][1].split(', ')[1]}"),
        ("beside 1 busy", "governed"),
        ("beside 1 busy", rows[1][1]),
    ], output
    assert all(float(row[3]) > 0 for row in rows)  # the child's CPU time was counted
    assert float(rows[0][5]) == 1.0  # idle / idle
