"""The fused (compiled) pooling equals the plain computation: outputs and every gradient, masks,
empty sequences, odd sizes and both thread counts included; ``pooling=auto`` picks it only
where it applies.

The kernel is compiled once per machine and Python environment (30-60 s; cached under
TORCH_EXTENSIONS_DIR), so the whole module is in the slow suite (``make test-slow``, which CI
runs too): the build was the largest single item of the default suite. The rest of the suite
runs with ``ATTNLSTM_NO_FUSED_POOL=1`` (tests/conftest.py), so that only this module pays for
the build; where no compiler is found the module is skipped with the reason.
"""

from __future__ import annotations

import copy
import json
import math
import os
import platform
import subprocess
import sys

import pytest
import torch
from omegaconf import OmegaConf

from attnlstm.errors import ConfigError
from attnlstm.models import build_model, fused_pool
from attnlstm.models.ffattn import AUTO_CHUNKED_FROM_STEPS
from attnlstm.models.fused_pool import fused_attention_pool, fused_mean_pool
from attnlstm.tasks.base import TaskSpec

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def kernel():
    """The compiled kernel, with the suite's opt-out lifted for this module."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(fused_pool.DISABLE_ENV, raising=False)
        fused_pool.fused_kernel.cache_clear()
        module = fused_pool.fused_kernel()
        if module is None:
            pytest.skip("the fused pooling kernel cannot be built here (no C++ compiler/ninja)")
        yield module
    fused_pool.fused_kernel.cache_clear()


def _plain(x, mask, dense, scorer):
    """The plain computation in float64: c and alpha of LReLU(dense(x)) pooled by tanh scores
    (scorer None: the mean over each row's real steps)."""
    hidden = torch.nn.functional.leaky_relu(dense(x), 0.01)  # B x T x D
    real = torch.ones(x.shape[:2], dtype=torch.bool) if mask is None else mask
    if scorer is None:
        counts = real.sum(1, keepdim=True).clamp(min=1).to(x.dtype)
        return (hidden * real.unsqueeze(-1)).sum(1) / counts, None
    scores = torch.tanh(scorer(hidden)).squeeze(-1).masked_fill(~real, float("-inf"))
    weights = torch.softmax(scores, dim=1).nan_to_num(0.0)  # a row with no steps: all 0
    return (weights.unsqueeze(-1) * hidden).sum(1), weights


def _gradients(fn, x, dense, scorer, grad_out):
    params = [x] if x.requires_grad else []
    params += [dense.weight, dense.bias] + ([] if scorer is None else list(scorer.parameters()))
    for p in params:
        p.grad = None
    context, weights = fn()
    (context * grad_out).sum().backward()
    return context.detach(), weights, [p.grad.clone() for p in params]


FEATURES_UNITS = [(2, 100), (2, 7), (1, 16), (3, 9), (4, 17), (5, 13)]


@pytest.mark.parametrize("attend", [True, False])
@pytest.mark.parametrize("masked", [False, True])
@pytest.mark.parametrize("features, units", FEATURES_UNITS)
@pytest.mark.parametrize("grad_x", [True, False], ids=["dx", "no-dx"])
def test_fused_equals_plain(
    attend: bool, masked: bool, features: int, units: int, grad_x: bool
) -> None:
    """Values and gradients (input, dense layer, scorer) within float32 rounding of the plain
    float64 computation; unit counts off the kernel's 8- and 16-lane vectors, every feature
    count the kernel compiles apart (1-4) and the generic one (5), a sequence with no steps,
    lengths that end the kernel's blocks of 8 steps full and partial (53, 30, 1, 8, 7:
    remainders 5, 6, 1, 0, 7), and x with and without a gradient (the kernel's two backward
    sweeps) included."""
    torch.manual_seed(0)
    batch, steps = 6, 53
    dense, scorer = torch.nn.Linear(features, units), torch.nn.Linear(units, 1)
    x = torch.randn(batch, steps, features, requires_grad=grad_x)
    lengths = torch.tensor([53, 30, 1, 0, 8, 7])
    mask = (torch.arange(steps) < lengths[:, None]) if masked else None
    grad_out = torch.randn(batch, units)

    def fused():
        if attend:
            return fused_attention_pool(x, mask, dense, scorer)
        return fused_mean_pool(x, mask, dense), None

    dense64 = copy.deepcopy(dense).double()
    scorer64 = copy.deepcopy(scorer).double() if attend else None
    x64 = x.detach().double().requires_grad_(grad_x)
    got = _gradients(fused, x, dense, scorer if attend else None, grad_out)
    want = _gradients(
        lambda: _plain(x64, mask, dense64, scorer64), x64, dense64, scorer64, grad_out.double()
    )
    torch.testing.assert_close(got[0].double(), want[0], rtol=1e-5, atol=1e-6)
    if attend:
        torch.testing.assert_close(got[1].double(), want[1], rtol=1e-5, atol=1e-7)
    for mine, theirs in zip(got[2], want[2], strict=True):
        torch.testing.assert_close(mine.double(), theirs, rtol=1e-4, atol=1e-5)
    if masked:
        assert (got[0][3] == 0).all() and (got[1] is None or (got[1][3] == 0).all())


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86 flags")
@pytest.mark.parametrize(
    "flags",
    ["-mno-avx512f", "-mno-avx512f -mno-avx2 -mno-avx -mno-fma -DATTNLSTM_NO_SHUFFLES"],
    ids=["avx2", "sse-no-shuffles"],
)
def test_fused_equals_plain_built_for_older_instruction_sets(flags: str) -> None:
    """The kernel's 8-lane code (AVX2, or SSE pairs without the vector shuffles that GCC < 12
    lacks) passes the same comparison as the build for this machine, which on an AVX-512
    machine takes the 16-lane code: each build is compiled in a fresh process with the flags
    added (about half a minute)."""
    env = {**os.environ, fused_pool.CFLAGS_ENV: flags}
    env.pop(fused_pool.DISABLE_ENV, None)
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            __file__,
            "-k",
            "test_fused_equals_plain and not older",
            "-m",
            "slow",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    expected = 2 * 2 * 2 * len(FEATURES_UNITS)  # attend, masked, grad_x, sizes
    assert f"{expected} passed" in done.stdout, done.stdout[-2000:]


def test_a_nan_parameter_gives_a_nan_context_as_the_plain_computation_does(kernel) -> None:
    """The kernel's vector exp and max keep NaN: a NaN scorer weight must not come out as a
    finite context (the plain computation gives NaN), nor a NaN input as a finite one."""
    torch.manual_seed(0)
    x = torch.randn(2, 20, 2)
    dense, scorer = torch.nn.Linear(2, 16), torch.nn.Linear(16, 1)
    with torch.no_grad():
        scorer.weight[0, 3] = float("nan")
    context, weights = fused_attention_pool(x, None, dense, scorer)
    assert torch.isnan(context).all() and torch.isnan(weights).all()
    with torch.no_grad():
        scorer.weight[0, 3] = 0.5
    x[1, 5, 0] = float("nan")
    context, _ = fused_attention_pool(x, None, dense, scorer)
    assert torch.isfinite(context[0]).all() and torch.isnan(context[1]).all()


def test_lengths_outside_the_rows_are_refused(kernel) -> None:
    """The kernel reads and writes each row up to its length: one beyond T (or below 0) is an
    error, not a read past the row."""
    x = torch.randn(2, 10, 2)
    weight, bias, w, c = torch.randn(8, 2), torch.randn(8), torch.randn(8), torch.zeros(1)
    for bad in ([10, 11], [-1, 3]):
        with pytest.raises(RuntimeError, match="outside"):
            kernel.fused_pool_forward(x, torch.tensor(bad), weight, bias, w, c, True)


def test_padding_is_skipped_exactly() -> None:
    """Masked steps contribute nothing, whatever they hold; weights there are exactly 0."""
    torch.manual_seed(0)
    dense, scorer = torch.nn.Linear(2, 10), torch.nn.Linear(10, 1)
    x = torch.randn(2, 40, 2)
    lengths = torch.tensor([40, 25])
    mask = torch.arange(40) < lengths[:, None]
    junk = x.clone()
    junk[1, 25:] = 1e4
    first, second = (fused_attention_pool(v, mask, dense, scorer) for v in (x, junk))
    torch.testing.assert_close(first[0], second[0], rtol=0, atol=0)
    assert (second[1][1, 25:] == 0).all()


def test_same_result_on_one_and_two_threads() -> None:
    """Sequences are split over the threads, and each gradient is summed per thread: the
    results agree to rounding whatever the thread count."""
    torch.manual_seed(0)
    dense, scorer = torch.nn.Linear(2, 24), torch.nn.Linear(24, 1)
    x = torch.randn(9, 300, 2)
    results = []
    threads = torch.get_num_threads()
    try:
        for count in (1, 2):
            torch.set_num_threads(count)
            dense.zero_grad(), scorer.zero_grad()
            context, _ = fused_attention_pool(x, None, dense, scorer)
            context.square().sum().backward()
            results.append(
                [context.detach(), dense.weight.grad.clone(), scorer.weight.grad.clone()]
            )
    finally:
        torch.set_num_threads(threads)
    for one, two in zip(*results, strict=True):
        torch.testing.assert_close(one, two, rtol=1e-5, atol=1e-6)


def _model(pooling: str, **overrides):
    torch.manual_seed(0)
    cfg = OmegaConf.create(
        {
            "name": "ffattn",
            "hidden_size": 12,
            "num_layers": 1,
            "bidirectional": False,
            "dropout": 0.0,
            "head_size": 8,
            "output_activation": "leaky_relu",
            "pooling": pooling,
            "chunk_size": 64,
            **overrides,
        }
    )
    attention = OmegaConf.create({"method": "feedforward", "hidden_dim": None})
    return build_model(cfg, attention, TaskSpec(2, 1))


def test_auto_picks_fused_for_long_float32_cpu_inputs() -> None:
    model = _model("auto")
    long = torch.randn(2, AUTO_CHUNKED_FROM_STEPS, 2)
    assert model.implementation(long) == "fused"
    assert model.implementation(long[:, :-1]) == "plain"
    assert model.implementation(long.double()) == "chunked"  # the kernel is float32 only
    assert _model("chunked").implementation(long) == "chunked"


def test_auto_takes_chunked_when_the_kernel_is_off(monkeypatch) -> None:
    monkeypatch.setenv(fused_pool.DISABLE_ENV, "1")
    fused_pool.fused_kernel.cache_clear()
    try:
        model = _model("auto")
        assert model.implementation(torch.randn(1, AUTO_CHUNKED_FROM_STEPS, 2)) == "chunked"
        with pytest.raises(ConfigError, match=r"model.pooling=fused needs its C\+\+ kernel"):
            _model("fused")
    finally:
        monkeypatch.delenv(fused_pool.DISABLE_ENV)
        fused_pool.fused_kernel.cache_clear()


def test_fused_model_equals_plain_model() -> None:
    """The whole ffattn network, fused against plain: prediction and parameter gradients."""
    plain, fused = _model("plain"), _model("fused")
    x = torch.randn(3, 70, 2)
    lengths = torch.tensor([70, 41, 5])
    outputs = []
    for model in (plain, fused):
        out = model(x, lengths)
        out.prediction.sum().backward()
        outputs.append((out.prediction.detach(), [p.grad for p in model.parameters()]))
    torch.testing.assert_close(outputs[1][0], outputs[0][0], rtol=1e-5, atol=1e-6)
    for mine, theirs in zip(outputs[1][1], outputs[0][1], strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-4, atol=1e-6)


def test_fused_is_refused_where_it_does_not_apply() -> None:
    with pytest.raises(ConfigError, match=r"model\.pooling=fused applies to ffattn and mean"):
        _model("fused", num_layers=2)


def test_training_run_with_the_fused_pooling(tmp_path, monkeypatch) -> None:
    """attnlstm-train at T0 = 600 with model.pooling=fused: the run trains, records the choice,
    and its log says the kernel was loaded."""
    from tests.conftest import TINY, only_run_dir, run_cli

    monkeypatch.delenv(fused_pool.DISABLE_ENV, raising=False)  # the child inherits os.environ
    tiny = [arg for arg in TINY if not arg.startswith("task.min_length")]
    run_cli(
        ["model=ffattn", "task.min_length=600", "model.pooling=fused", *tiny], tmp_path / "runs"
    )
    run = only_run_dir(tmp_path / "runs")
    assert "pooling: fused" in (run / "config.yaml").read_text()
    assert "loading the fused pooling kernel" in (run / "train.log").read_text()
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["status"] in ("completed", "solved"), metrics["status"]
    assert math.isfinite(metrics["test"]["test/loss"])
