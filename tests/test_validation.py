"""Bad values are refused before any data is read (issue 12).

Every schema checks its keys' ranges (attnlstm/config.py); cross-group mismatches are checked
from the registries' capabilities. The command line reports a refusal as one line
``error: <key>=<value> is not allowed: <what is>`` on stderr, exits with code 2 and leaves no
run folder behind.

Each command-line case costs a Python start-up (~3 s, mostly importing torch), so the
subprocess test covers the issue's list only, its cases run a few at a time; every range check
of every schema is covered in-process (one case per check), on configs composed once per
task / model family.
"""

from __future__ import annotations

import copy
import functools
import os
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import DictConfig, OmegaConf

from attnlstm.errors import ConfigError
from attnlstm.train import check_config
from attnlstm.training.optim import build_optimizer
from tests.conftest import compose_config, run_cli

# -- the issue's list -----------------------------------------------------------------------

#: id -> (overrides, texts the one-line message must contain: the key and bad value as
#: ``key=value``, and what is allowed)
ISSUE_CASES: dict[str, tuple[list[str], list[str]]] = {
    "grad_clip=-1": (["trainer.grad_clip=-1"], ["trainer.grad_clip=-1 ", "positive"]),
    "max_epochs=0": (["trainer.max_epochs=0"], ["trainer.max_epochs=0 ", "positive"]),
    "max_epochs=-1": (["trainer.max_epochs=-1"], ["trainer.max_epochs=-1 ", "positive"]),
    "log_every_n_steps=0": (
        ["trainer.log_every_n_steps=0"],
        ["trainer.log_every_n_steps=0 ", "positive"],
    ),
    "limit_train_batches=0": (
        ["trainer.limit_train_batches=0"],
        ["trainer.limit_train_batches=0 ", "a fraction in (0, 1]"],
    ),
    "limit_eval_batches=1.5": (
        ["trainer.limit_eval_batches=1.5"],
        ["trainer.limit_eval_batches=1.5 ", "a fraction in (0, 1]"],
    ),
    "checkpoint_every_n_steps=0": (
        ["trainer.checkpoint_every_n_steps=0"],
        ["trainer.checkpoint_every_n_steps=0 ", "positive, or null"],
    ),
    "early_stopping_patience=-1": (
        ["trainer.early_stopping_patience=-1"],
        ["trainer.early_stopping_patience=-1 ", "positive, or null"],
    ),
    "step_size=0": (
        ["optim.scheduler=step", "optim.step_size=0"],
        ["optim.step_size=0 ", "positive"],
    ),
    "weight_decay=-1": (["optim.weight_decay=-1"], ["optim.weight_decay=-1 ", ">= 0"]),
    "betas=[2,0.999]": (["optim.betas=[2,0.999]"], ["optim.betas=[2,0.999] ", "[0, 1)"]),
    "momentum=-1": (["optim.momentum=-1"], ["optim.momentum=-1 ", ">= 0"]),
    "gamma=2": (["optim.scheduler=plateau", "optim.gamma=2"], ["optim.gamma=2 ", "(0, 1)"]),
    "tolerance=-1": (["task.tolerance=-1"], ["task.tolerance=-1 ", "positive"]),
    "hidden_dim=0": (["attention.hidden_dim=0"], ["attention.hidden_dim=0 ", "positive"]),
    "hidden_dim=-5": (["attention.hidden_dim=-5"], ["attention.hidden_dim=-5 ", "positive"]),
    "lm_without_path": (["task=lm", "model=lm"], ["task.path", "required"]),
    "lm_on_tagging": (["model=lm", "task=pos_ewt"], ["model=lm ", "tagger"]),
    "max_epochz": (["+trainer.max_epochz=3"], ["trainer.max_epochz=3 ", "max_epochs"]),
    "tags": (["+tags=[x]"], ["tags=[x] ", "no key 'tags'"]),
}


def _assert_one_line(message: str, texts: list[str]) -> None:
    assert "\n" not in message.strip(), message
    for text in texts:
        assert text in message, (text, message)


@pytest.mark.parametrize("case", list(ISSUE_CASES))
def test_issue_values_are_config_errors(case: str) -> None:
    overrides, texts = ISSUE_CASES[case]
    with pytest.raises(ConfigError) as error:
        check_config(compose_config(overrides))
    _assert_one_line(str(error.value), texts)


@pytest.fixture(scope="module")
def cli_results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, tuple[Path, subprocess.CompletedProcess[str]]]:
    """The collected command-line cases, run a few at a time (each is a Python start-up)."""
    cases = [
        item.callspec.params["case"]
        for item in request.session.items
        if item.module is request.module
        and getattr(item, "originalname", "") == "test_cli_refuses_a_bad_value"
    ]
    # folder names free of '=' and '[': the path goes into a hydra.run.dir override
    cwds = {case: tmp_path_factory.mktemp(f"cli{i}") for i, case in enumerate(cases)}

    def run(case: str) -> subprocess.CompletedProcess[str]:
        cwd = cwds[case]
        args = [*ISSUE_CASES[case][0], "device=cpu", f"hydra.run.dir={cwd / 'run'}"]
        return run_cli(args, cwd=cwd, check=False, timeout=120)

    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1)) as pool:
        results = dict(zip(cases, pool.map(run, cases), strict=True))
    return {case: (cwds[case], results[case]) for case in cases}


@pytest.mark.parametrize(
    "case",
    # each case is an interpreter start: the default suite runs two through the command line
    # and test_issue_values_are_config_errors covers every one in-process; the rest are slow
    [
        case if index < 2 else pytest.param(case, marks=pytest.mark.slow)
        for index, case in enumerate(ISSUE_CASES)
    ],
)
def test_cli_refuses_a_bad_value(
    case: str, cli_results: dict[str, tuple[Path, subprocess.CompletedProcess[str]]]
) -> None:
    cwd, result = cli_results[case]
    shown = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.returncode == 2, shown
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), shown
    _assert_one_line(lines[0], ISSUE_CASES[case][1])
    assert "epoch" not in result.stdout  # refused before training
    # the run folder Hydra made is gone, and nothing else was written (with job.chdir=false
    # and hydra.run.dir given, Hydra needs no other folder)
    assert not (cwd / "run").exists(), shown
    assert sorted(p.name for p in cwd.iterdir()) == [], shown


# -- every range check, in-process ----------------------------------------------------------

#: config families: group choices whose composed config passes every check
BASES: dict[str, tuple[str, ...]] = {
    "default": (),  # task=addition (long_memory), model=lstm_attn (sequence)
    "lm": ("task=lm", "task.path=corpus", "model=lm"),
    "tagging": ("task=pos_toy", "model=tagger"),
    "reverse": ("task=reverse", "model=seq2seq"),
    "translation": ("task=translation", "model=seq2seq"),
    "text": ("task=text_classification", "task.path=corpus"),
    "sgd": ("optim=sgd",),
}


@functools.cache
def _base(name: str) -> DictConfig:
    return compose_config(BASES[name])


def _case(base: str, expected: str, **values: Any) -> Any:
    """``values`` (``trainer__max_epochs=0`` for ``trainer.max_epochs=0``) set on the ``base``
    config; the ConfigError must contain ``expected``."""
    updates = {key.replace("__", "."): value for key, value in values.items()}
    return pytest.param(base, updates, expected, id=f"{base}:{expected.split(' ')[0]}")


RANGE_CASES = [
    # trainer
    _case("default", "trainer.max_epochs=0 ", trainer__max_epochs=0),
    _case("default", "trainer.log_every_n_steps=-2 ", trainer__log_every_n_steps=-2),
    _case("default", "trainer.grad_clip=0 ", trainer__grad_clip=0.0),
    _case("default", "trainer.early_stopping_patience=0 ", trainer__early_stopping_patience=0),
    _case("default", "trainer.limit_train_batches=-1 ", trainer__limit_train_batches=-1),
    _case("default", "trainer.limit_eval_batches=0 ", trainer__limit_eval_batches=0),
    _case("default", "trainer.attention_images=-1 ", trainer__attention_images=-1),
    _case("default", "trainer.overfit_batches=-1 ", trainer__overfit_batches=-1),
    _case("default", "trainer.profile_steps=-1 ", trainer__profile_steps=-1),
    _case("default", "trainer.accumulate_grad_batches=0 ", trainer__accumulate_grad_batches=0),
    _case("default", "trainer.threads=0 ", trainer__threads=0),
    _case("default", "trainer.precision=8 ", trainer__precision="8"),
    _case("default", "trainer.checkpoint_every_n_steps=0 ", trainer__checkpoint_every_n_steps=0),
    # optim
    _case("default", "optim.lr=0 ", optim__lr=0.0),
    _case("default", "optim.step_size=-3 ", optim__step_size=-3),
    _case("default", "optim.betas=[0.9] ", optim__betas=[0.9]),
    _case("default", "optim.betas=[0.9,1] ", optim__betas=[0.9, 1.0]),
    _case("default", "optim.momentum=-0.5 ", optim__momentum=-0.5),
    _case("default", "optim.weight_decay=-0.01 ", optim__weight_decay=-0.01),
    _case("default", "optim.patience=-1 ", optim__patience=-1),
    _case("default", "optim.min_lr=-1e-05 ", optim__min_lr=-1e-5),
    _case("default", "optim.nonmono=-1 ", optim__nonmono=-1),
    _case("default", "optim.gamma=0 ", optim__gamma=0.0),
    _case("default", "optim.gamma=1 ", optim__gamma=1.0),
    _case("default", "optim.ema_decay=1 ", optim__ema_decay=1.0),
    _case("sgd", "optim.nesterov=true ", optim__nesterov=True, optim__momentum=0.0),
    # device, attention
    _case("default", "device.index=-1 ", device__index=-1),
    _case("default", "attention.hidden_dim=0 ", attention__hidden_dim=0),
    # task: long memory (addition)
    _case("default", "task.min_length=5 ", task__min_length=5),
    _case("default", "task.max_length=500 ", task__max_length=500),
    _case("default", "task.max_length=50 ", task__variable_length=True, task__max_length=50),
    _case("default", "task.batch_size=0 ", task__batch_size=0),
    _case("default", "task.batches_per_epoch=0 ", task__batches_per_epoch=0),
    _case("default", "task.eval_size=0 ", task__eval_size=0),
    _case("default", "task.eval_batch_size=0 ", task__eval_batch_size=0),
    _case("default", "task.eval_size=150 ", task__eval_size=150),
    _case("default", "task.tolerance=0 ", task__tolerance=0.0),
    # task: language model
    _case("lm", "task.batch_size=0 ", task__batch_size=0),
    _case("lm", "task.eval_batch_size=0 ", task__eval_batch_size=0),
    _case("lm", "task.bptt=0 ", task__bptt=0),
    _case("lm", "task.max_train_tokens=0 ", task__max_train_tokens=0),
    # task: tagging
    _case("tagging", "task.batch_size=0 ", task__batch_size=0),
    _case("tagging", "task.eval_batch_size=0 ", task__eval_batch_size=0),
    _case("tagging", "task.min_count=0 ", task__min_count=0),
    _case("tagging", "task.max_word_chars=0 ", task__max_word_chars=0),
    _case("tagging", "task.word_dropout=1 ", task__word_dropout=1.0),
    _case("tagging", "task.label_smoothing=-0.1 ", task__label_smoothing=-0.1),
    _case("tagging", "task.word_dropout_alpha=-1 ", task__word_dropout_alpha=-1.0),
    _case("tagging", "task.aux_weight=-1 ", task__aux_weight=-1.0),
    _case("tagging", "task.aux_tag_column=upos ", task__aux_tag_column="upos"),
    _case("tagging", "task.aux_tag_column=xpos ", task__aux_tag_column="xpos"),  # pos_toy
    # task: synthetic seq2seq (and what every seq2seq task shares)
    _case("reverse", "task.batch_size=0 ", task__batch_size=0),
    _case("reverse", "task.eval_batch_size=0 ", task__eval_batch_size=0),
    _case("reverse", "task.beam_size=0 ", task__beam_size=0),
    _case("reverse", "task.max_decode_ratio=0 ", task__max_decode_ratio=0.0),
    _case("reverse", "task.max_decode_extra=-1 ", task__max_decode_extra=-1),
    _case("reverse", "task.length_penalty=-1 ", task__length_penalty=-1.0),
    _case("reverse", "task.solved_exact=1.5 ", task__solved_exact=1.5),
    _case("reverse", "task.symbols=0 ", task__symbols=0),
    _case("reverse", "task.min_length=0 ", task__min_length=0),
    _case("reverse", "task.max_length=3 ", task__max_length=3),
    _case("reverse", "task.batches_per_epoch=0 ", task__batches_per_epoch=0),
    _case("reverse", "task.eval_size=0 ", task__eval_size=0),
    # task: translation
    _case("translation", "task.filter_max_length=0 ", task__filter_max_length=0),
    _case("translation", "task.min_count=0 ", task__min_count=0),
    _case("translation", "task.valid_fraction=0 ", task__valid_fraction=0.0),
    _case("translation", "task.test_fraction=1 ", task__test_fraction=1.0),
    _case(
        "translation", "task.test_fraction=0.5 ", task__valid_fraction=0.6, task__test_fraction=0.5
    ),
    # task: text classification
    _case("text", "task.min_count=0 ", task__min_count=0),
    _case("text", "task.batch_size=0 ", task__batch_size=0),
    _case("text", "task.eval_batch_size=0 ", task__eval_batch_size=0),
    _case("text", "task.max_tokens=0 ", task__max_tokens=0),
    _case("text", "task.word_dropout=1 ", task__word_dropout=1.0),
    _case("text", "task.delimiter=", task__delimiter="ab"),
    _case("text", "task.subword_buckets=-1 ", task__subword_buckets=-1),
    _case("text", "task.subword_min_n=0 ", task__subword_min_n=0),
    _case("text", "task.subword_max_n=2 ", task__subword_min_n=3, task__subword_max_n=2),
    # model: sequence models
    _case("default", "model.hidden_size=0 ", model__hidden_size=0),
    _case("default", "model.num_layers=0 ", model__num_layers=0),
    _case("default", "model.head_size=0 ", model__head_size=0),
    _case("default", "model.chunk_size=0 ", model__chunk_size=0),
    _case("default", "model.embedding_size=0 ", model__embedding_size=0),
    _case("default", "model.forget_bias=nan ", model__forget_bias=float("nan")),
    _case("default", "model.forget_bias=inf ", model__forget_bias=float("inf")),
    _case("default", "model.dropout=1 ", model__dropout=1.0),
    _case("default", "model.embedding_dropout=-0.1 ", model__embedding_dropout=-0.1),
    # model: language model
    _case("lm", "model.adaptive_cutoffs=[10,5] ", model__adaptive_cutoffs=[10, 5]),
    _case("lm", "model.adaptive_div_value=0.5 ", model__adaptive_div_value=0.5),
    _case("lm", "model.embedding_size=0 ", model__embedding_size=0),
    _case("lm", "model.hidden_size=0 ", model__hidden_size=0),
    _case("lm", "model.num_layers=0 ", model__num_layers=0),
    _case("lm", "model.attention_window=0 ", model__attention_window=0),
    _case("lm", "model.dropout_embedding=1 ", model__dropout_embedding=1.0),
    _case("lm", "model.dropout_input=1 ", model__dropout_input=1.0),
    _case("lm", "model.dropout_hidden=-0.1 ", model__dropout_hidden=-0.1),
    _case("lm", "model.dropout_output=1.5 ", model__dropout_output=1.5),
    _case("lm", "model.weight_drop=1 ", model__weight_drop=1.0),
    _case("lm", "model.ar=-1 ", model__ar=-1.0),
    _case("lm", "model.tar=-1 ", model__tar=-1.0),
    _case("lm", "model.init_range=0 ", model__init_range=0.0),
    # model: tagger
    _case("tagging", "model.word_embedding_size=0 ", model__word_embedding_size=0),
    _case("tagging", "model.hidden_size=0 ", model__hidden_size=0),
    _case("tagging", "model.num_layers=0 ", model__num_layers=0),
    _case("tagging", "model.char_embedding_size=0 ", model__char_embedding_size=0),
    _case("tagging", "model.char_hidden_size=0 ", model__char_hidden_size=0),
    _case("tagging", "model.char_kernel_size=0 ", model__char_kernel_size=0),
    _case(
        "tagging", "model.char_kernel_size=4 ", model__char_encoder="cnn", model__char_kernel_size=4
    ),
    _case("tagging", "model.dropout=1 ", model__dropout=1.0),
    # model: seq2seq
    _case("reverse", "model.embedding_size=0 ", model__embedding_size=0),
    _case("reverse", "model.hidden_size=0 ", model__hidden_size=0),
    _case("reverse", "model.num_layers=0 ", model__num_layers=0),
    _case("reverse", "model.hidden_size=7 ", model__hidden_size=7),  # bidirectional: even
    _case("reverse", "model.dropout=1 ", model__dropout=1.0),
    _case("reverse", "model.teacher_forcing=1.5 ", model__teacher_forcing=1.5),
    _case(
        "reverse",
        "model.input_feed=true ",
        model__attention_style="bahdanau",
        model__input_feed=True,
    ),
]


def test_every_base_config_passes() -> None:
    """The cases below fail because of their value, not because of their base."""
    for name in BASES:
        check_config(_base(name))


@pytest.mark.parametrize(("base", "updates", "expected"), RANGE_CASES)
def test_every_range_check_names_key_value_and_rule(
    base: str, updates: dict[str, Any], expected: str
) -> None:
    cfg = copy.deepcopy(_base(base))
    for key, value in updates.items():
        OmegaConf.update(cfg, key, value, merge=False)
    with pytest.raises(ConfigError) as error:
        check_config(cfg)
    message = str(error.value)
    _assert_one_line(message, [expected, " is not allowed: "])
    assert message.split(" is not allowed: ", 1)[1].strip(), message  # says what is allowed


def test_every_range_checked_key_has_a_case() -> None:
    """Each key that a schema's __post_init__ names has a case above (new checks need one)."""
    import inspect
    import re

    import attnlstm.config as config

    source = inspect.getsource(config)
    checked: set[str] = set()
    for group, keys in re.findall(
        r"_(?:positive|positive_or_none|non_negative|probability)\(\s*self,\s*\"(\w+)\",\s*"
        r"((?:\"\w+\"(?:,\s*)?)+)",
        source,
    ):
        checked |= {f"{group}.{key}" for key in re.findall(r"\"(\w+)\"", keys)}
    checked |= set(re.findall(r"_fail\(\s*f?\"(\w+\.\w+)\"", source))
    covered = {p.values[2].split("=")[0] for p in RANGE_CASES}
    assert checked - covered == set()


def test_adamw_decouples_the_weight_decay() -> None:
    typed = check_config(compose_config(["optim.name=adamw", "optim.weight_decay=0.5"]))
    weight = torch.nn.Parameter(torch.ones(1))
    adamw = build_optimizer(typed.optim, [weight])
    assert type(adamw) is torch.optim.AdamW
    assert adamw.param_groups[0]["weight_decay"] == 0.5
    assert adamw.param_groups[0]["betas"] == (0.9, 0.999)
    # a zero gradient: AdamW only shrinks the weight by lr * weight_decay, while Adam's L2 term
    # becomes a gradient of weight_decay * w, normalised to a full step of lr
    lr = typed.optim.lr
    weight.grad = torch.zeros(1)
    adamw.step()
    assert weight.item() == pytest.approx(1 - lr * 0.5)
    typed_adam = check_config(compose_config(["optim.name=adam", "optim.weight_decay=0.5"]))
    other = torch.nn.Parameter(torch.ones(1))
    adam = build_optimizer(typed_adam.optim, [other])
    assert type(adam) is torch.optim.Adam
    other.grad = torch.zeros(1)
    adam.step()
    assert other.item() == pytest.approx(1 - lr, rel=1e-4)
