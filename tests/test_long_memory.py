"""The addition and multiplication generators follow Raffel & Ellis's definitions."""

from __future__ import annotations

import math

import pytest
import torch

from attnlstm.config import LongMemoryTaskConfig
from attnlstm.errors import ConfigError
from attnlstm.tasks.long_memory import (
    LongMemoryTask,
    generate,
    last_padded_half_step,
    padded_length,
)


def _check_sequence(
    inputs: torch.Tensor, target: float, length: int, problem: str, rule: str
) -> None:
    values, markers = inputs[:, 0], inputs[:, 1]
    padded_to = inputs.size(0)
    assert markers[0] == -1 and markers[length - 1] == -1
    marked = torch.nonzero(markers == 1).flatten().tolist()
    assert len(marked) == 2, marked
    # N1 in 1..9; N2 below int(T/2 - 1) (padded_half, T padded; 10 where 9 is stepped on) or
    # int(L/2 - 1) (own_half): which is which cannot be told apart, but the smaller is <= 9
    first, second = marked
    top = max(10, padded_to // 2 - 2) if rule == "padded_half" else max(9, length // 2 - 2)
    assert 1 <= first <= 9
    assert first < second <= top
    others = torch.ones_like(markers, dtype=torch.bool)
    others[[0, length - 1, first, second]] = False
    assert (markers[others] == 0).all()
    assert (values[length:] == 0).all() and (markers[length:] == 0).all()
    low = -1.0 if problem == "addition" else 0.0
    assert values[:length].min() >= low and values[:length].max() <= 1.0
    x1, x2 = float(values[first]), float(values[second])
    expected = 0.5 + (x1 + x2) / 4 if problem == "addition" else x1 * x2
    assert math.isclose(target, expected, rel_tol=1e-6, abs_tol=1e-7)


@pytest.mark.parametrize("rule", ["padded_half", "own_half"])
@pytest.mark.parametrize("problem", ["addition", "multiplication"])
def test_generated_sequences_follow_the_definition(problem: str, rule: str) -> None:
    lengths = torch.tensor([56, 60, 100, 110, 57, 64, 99, 111])
    inputs, targets = generate(problem, lengths, 111, torch.Generator().manual_seed(3), rule)
    assert inputs.shape == (8, 111, 2) and targets.shape == (8,)
    for i, length in enumerate(lengths.tolist()):
        _check_sequence(inputs[i], float(targets[i]), length, problem, rule)


def test_own_half_fits_the_shortest_sequences() -> None:
    lengths = torch.tensor([11, 12, 20, 50, 100, 110, 57, 64])
    inputs, targets = generate(
        "addition", lengths, 111, torch.Generator().manual_seed(3), "own_half"
    )
    for i, length in enumerate(lengths.tolist()):
        _check_sequence(inputs[i], float(targets[i]), length, "addition", "own_half")


def test_padded_half_refuses_sequences_its_markers_may_pass() -> None:
    # N2 reaches int(111/2 - 1) - 1 = 53, the end marker of a 54-step sequence
    with pytest.raises(ValueError, match="every length must be at least 55"):
        generate("addition", torch.tensor([100, 54]), 111, torch.Generator(), "padded_half")
    generate("addition", torch.tensor([100, 55]), 111, torch.Generator(), "padded_half")
    # at T = 22 the draws stop at 9, and N1 = 9 moves N2 on to 10: the end marker of L = 11
    assert last_padded_half_step(22) == 10 and last_padded_half_step(111) == 53
    with pytest.raises(ValueError, match="every length must be at least 12"):
        generate("addition", torch.tensor([11]), 22, torch.Generator(), "padded_half")
    inputs, targets = generate(
        "addition", torch.full((20_000,), 12), 22, torch.Generator().manual_seed(0)
    )
    for i in range(0, 20_000, 97):
        _check_sequence(inputs[i], float(targets[i]), 12, "addition", "padded_half")
    assert int(((inputs[..., 1] == 1).sum(1) == 2).sum()) == 20_000  # no marker overwritten


def _second_marker_pmf_padded_half(padded_to: int) -> dict[int, float]:
    """P(N2 = k) by the paper-era code (f791f10), written from its three lines:
    N_1 = randint(1, 10); N_2 = choice(range(1, int(T/2 - 1))); N_2[N_2 == N_1] += 1."""
    draws = range(1, int(padded_to / 2 - 1))
    pmf: dict[int, float] = {}
    for n1 in range(1, 10):
        for n2 in draws:
            k = n2 + 1 if n2 == n1 else n2
            pmf[k] = pmf.get(k, 0.0) + 1 / 9 / len(draws)
    return pmf


def _second_marker_pmf_own_half(length: int) -> dict[int, float]:
    """P(N2 = k) by the first revision (a41c5f2): for each N1 in range(1, 10),
    N_2 = choice(range(1, N_1) + range(N_1 + 1, int(length/2 - 1)))."""
    pmf: dict[int, float] = {}
    for n1 in range(1, 10):
        choices = [*range(1, n1), *range(n1 + 1, int(length / 2 - 1))]
        for k in choices:
            pmf[k] = pmf.get(k, 0.0) + 1 / 9 / len(choices)
    return pmf


@pytest.mark.parametrize(
    ("rule", "length", "padded_to"),
    [
        ("padded_half", 100, 111),
        ("padded_half", 60, 111),
        ("own_half", 100, 111),
        ("own_half", 60, 111),
    ],
)
def test_second_marker_follows_the_authors_distribution(
    rule: str, length: int, padded_to: int
) -> None:
    """The empirical law of (N1, N2) over 200,000 sequences matches the one their code
    defines, within sampling error (total variation distance < 0.01)."""
    n = 200_000
    seed = 7
    inputs, _ = generate(
        "addition", torch.full((n,), length), padded_to, torch.Generator().manual_seed(seed), rule
    )
    # N1 is the generator's first integer draw after the values: draw it again from the
    # same stream to tell N1 from N2 (the markers alone do not say which is which)
    replay = torch.Generator().manual_seed(seed)
    torch.rand(n, padded_to, generator=replay)
    first = torch.randint(1, 10, (n,), generator=replay)
    marked = inputs[..., 1] == 1
    marked[torch.arange(n), first] = False
    assert int(marked.sum(1).min()) == 1 and int(marked.sum(1).max()) == 1
    second = marked.float().argmax(1)
    expected = (
        _second_marker_pmf_padded_half(padded_to)
        if rule == "padded_half"
        else _second_marker_pmf_own_half(length)
    )
    counts = torch.bincount(second, minlength=padded_to).double() / n
    support = set(torch.nonzero(counts).flatten().tolist())
    assert support == set(expected)
    distance = 0.5 * sum(abs(float(counts[k]) - expected.get(k, 0.0)) for k in range(padded_to))
    assert distance < 0.01, distance


def test_the_two_rules_differ_where_the_paper_says() -> None:
    """With T = 111 and L = 60, the paper's code puts N2 up to 53 (past L/2), the first
    revision at most 28. Where the draw equals N1 the paper's code moves N2 one step on:
    N2 = 1 loses the draws with N1 = 1 (8/9 of a plain step's chance), N2 = 10 gains those
    with N1 = 9 (10/9), every other step keeps 1/K of the K draws."""
    padded = _second_marker_pmf_padded_half(111)
    own = _second_marker_pmf_own_half(60)
    assert max(padded) == 53 and max(own) == 28
    plain = padded[20]
    assert plain == pytest.approx(1 / 53)
    assert padded[1] == pytest.approx(8 / 9 * plain)
    assert padded[10] == pytest.approx(10 / 9 * plain)
    assert all(padded[k] == pytest.approx(plain) for k in range(2, 10))
    assert sum(padded.values()) == pytest.approx(1) and sum(own.values()) == pytest.approx(1)


def test_marked_positions_cover_their_ranges() -> None:
    lengths = torch.full((4000,), 100)
    inputs, _ = generate("addition", lengths, 100, torch.Generator().manual_seed(0), "own_half")
    markers = inputs[..., 1]
    first = (markers[:, :10] == 1).float().argmax(1)
    assert set(first.tolist()) == set(range(1, 10))
    positions = torch.nonzero(markers == 1)[:, 1]
    # N2 is drawn from 1 .. int(100/2 - 1) - 1 = 48
    assert int(positions.max()) == 48
    assert int(positions.min()) == 1


def test_the_task_draws_n2_by_its_configured_rule() -> None:
    """A fixed-length task at T0 = 100 (lengths 100..110, padded to 111): under the paper's
    rule N2 ranges up to int(111/2 - 1) - 1 = 53 whatever the sequence's length, under the
    first revision up to int(L/2 - 1) - 1 of its own length L."""
    past_own_half = {}
    for rule in ("padded_half", "own_half"):
        task = _task(min_length=100, eval_size=2000, eval_batch_size=100, second_marker=rule)
        beyond = 0
        for batch in task.eval_batches("test"):
            top = (batch.inputs[..., 1] == 1).float().cumsum(1).argmax(1)  # the later marker
            lengths = (batch.inputs[..., 1] == -1).float().cumsum(1).argmax(1) + 1
            assert int(top.max()) <= 53
            beyond += int((top > lengths // 2 - 2).sum())
        past_own_half[rule] = beyond
    assert past_own_half["own_half"] == 0
    assert past_own_half["padded_half"] > 50  # about 1/53 of 2000 per step past L/2 - 2


def test_values_are_uniform_over_their_range() -> None:
    lengths = torch.full((200,), 100)
    add, _ = generate("addition", lengths, 100, torch.Generator().manual_seed(0))
    mul, _ = generate("multiplication", lengths, 100, torch.Generator().manual_seed(0))
    assert abs(float(add[..., 0].mean())) < 0.02 and float(add[..., 0].min()) < -0.99
    assert abs(float(mul[..., 0].mean()) - 0.5) < 0.02 and float(mul[..., 0].min()) >= 0


def test_padded_length_is_the_papers() -> None:
    # int(np.ceil(1.1 * T0)) in floating point, as their code
    assert padded_length(50) == 56
    assert padded_length(100) == 111
    assert padded_length(1000) == 1100
    assert padded_length(10000) == 11000


def _task(seed: int = 0, **overrides) -> LongMemoryTask:
    settings = {
        "min_length": 50,
        "batch_size": 20,
        "batches_per_epoch": 3,
        "eval_size": 60,
        "eval_batch_size": 20,
        **overrides,
    }
    return LongMemoryTask(LongMemoryTaskConfig(**settings), seed)


def test_fixed_length_batches() -> None:
    task = _task()
    batches = list(task.train_batches(1))
    assert len(batches) == 3 == task.num_train_batches()
    for batch in batches:
        assert batch.inputs.shape == (20, 56, 2)
        assert int(batch.lengths.min()) >= 50 and int(batch.lengths.max()) <= 55
        for i in range(20):
            _check_sequence(
                batch.inputs[i],
                float(batch.targets[i]),
                int(batch.lengths[i]),
                "addition",
                "padded_half",  # the task's default
            )


def test_fresh_training_sequences_every_epoch_and_seeded() -> None:
    task = _task(seed=1)
    epoch1 = [b.inputs for b in task.train_batches(1)]
    epoch2 = [b.inputs for b in task.train_batches(2)]
    assert not any(torch.equal(a, b) for a, b in zip(epoch1, epoch2, strict=True))
    again = [b.inputs for b in _task(seed=1).train_batches(1)]
    assert all(torch.equal(a, b) for a, b in zip(epoch1, again, strict=True))
    other = [b.inputs for b in _task(seed=2).train_batches(1)]
    assert not torch.equal(epoch1[0], other[0])


def test_test_set_is_fixed_whatever_the_run_seed() -> None:
    first = _task(seed=1).eval_batches("test")
    second = _task(seed=99).eval_batches("test")
    assert sum(len(b) for b in first) == 60
    assert all(torch.equal(a.inputs, b.inputs) for a, b in zip(first, second, strict=True))
    moved = _task(seed=1, data_seed=7).eval_batches("test")
    assert not torch.equal(first[0].inputs, moved[0].inputs)


def test_validation_is_the_test_set_unless_separate() -> None:
    task = _task()
    assert task.eval_batches("val") is task.eval_batches("test")
    separate = _task(separate_validation=True)
    assert not torch.equal(
        separate.eval_batches("val")[0].inputs, separate.eval_batches("test")[0].inputs
    )


def test_variable_length_mode() -> None:
    task = _task(variable_length=True, min_length=50, max_length=400, eval_batch_size=10)
    for batch in task.train_batches(1):
        length = batch.inputs.size(1)
        assert 50 <= length <= 400
        assert (batch.lengths == length).all()
    lengths = [b.inputs.size(1) for b in task.eval_batches("test")]
    expected = torch.linspace(50, 400, 6, dtype=torch.float64).long().tolist()
    assert lengths == expected


def test_unmasked_paper_padding() -> None:
    batch = next(_task(mask_padding=False).train_batches(1))
    assert batch.lengths is None and batch.mask is None
    assert batch.inputs.shape[1] == 56


def test_multiplication_targets() -> None:
    batch = next(_task(name="multiplication").train_batches(1))
    for i in range(20):
        _check_sequence(
            batch.inputs[i],
            float(batch.targets[i]),
            int(batch.lengths[i]),
            "multiplication",
            "padded_half",
        )


def test_resume_state_continues_the_stream() -> None:
    task = _task(seed=5)
    list(task.train_batches(1))
    state = {k: v.clone() for k, v in task.state_dict().items()}
    expected = [b.inputs for b in task.train_batches(2)]
    restored = _task(seed=0)
    restored.load_state_dict(state)
    got = [b.inputs for b in restored.train_batches(2)]
    assert all(torch.equal(a, b) for a, b in zip(expected, got, strict=True))


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"min_length": 5}, "task.min_length=5 is not allowed: the markers need"),
        ({"max_length": 500}, "variable-length mode"),
        ({"variable_length": True, "max_length": 20}, "it must be >= task.min_length=50"),
        ({"eval_size": 50, "eval_batch_size": 20}, "multiple of"),
        ({"batch_size": 0}, "task.batch_size=0 is not allowed: it must be positive"),
    ],
)
def test_bad_settings_are_explained(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _task(**overrides)


def test_accuracy_uses_the_tolerance() -> None:
    task = _task()
    batch = task.eval_batches("test")[0]
    meter = task.new_meter()

    class Output:
        prediction = (batch.targets + torch.tensor([0.039, -0.041] * 10)).unsqueeze(-1)

    meter.update(Output, batch)
    metrics = meter.compute()
    assert metrics["accuracy"] == 0.5
    assert math.isclose(metrics["loss"], (0.039**2 + 0.041**2) / 2, rel_tol=1e-4)


def test_a_run_saved_before_the_rule_existed_keeps_the_first_revisions_rule() -> None:
    """config.yaml of a run made before ``task.second_marker`` existed has no such key: its
    N2 came from the first revision's rule, so a resume (or an evaluation of its test set)
    must draw by that rule, not by today's default."""
    from omegaconf import OmegaConf

    from attnlstm.runs import saved_config
    from tests.conftest import compose_config

    saved = OmegaConf.to_container(compose_config(["task=addition"]), resolve=True)
    assert saved["task"].pop("second_marker") == "padded_half"
    assert saved_config(OmegaConf.create(saved)).task.second_marker == "own_half"
    saved["task"]["second_marker"] = "padded_half"
    assert saved_config(OmegaConf.create(saved)).task.second_marker == "padded_half"


@pytest.mark.parametrize("preset", ["raffel_fixed", "raffel_variable"])
@pytest.mark.parametrize("problem", ["addition", "multiplication"])
def test_the_raffel_presets_draw_n2_by_the_paper_era_rule(preset: str, problem: str) -> None:
    """The presets behind Table 1 and the variable-length table draw N2 by the rule of the
    paper-era code (``padded_half``), stated in the preset itself so a change of the task's
    default cannot move the reproduced tables; composed as ``scripts/reproduce.py`` does."""
    from omegaconf import OmegaConf

    from attnlstm.paths import config_dir
    from tests.conftest import compose_config

    preset_file = OmegaConf.load(config_dir() / "experiment" / f"{preset}.yaml")
    assert preset_file.task.second_marker == "padded_half"
    config = compose_config([f"experiment={preset}", f"task={problem}"])
    assert config.task.second_marker == "padded_half"
    overridden = compose_config(
        [f"experiment={preset}", f"task={problem}", "task.second_marker=own_half"]
    )
    assert overridden.task.second_marker == "own_half"
