"""Config groups compose, and bad overrides fail early with clear messages."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf.errors import ConfigAttributeError, ValidationError

from attnlstm.attention import ATTENTION
from attnlstm.errors import ConfigError
from attnlstm.models import MODELS, build_model
from attnlstm.paths import config_dir
from attnlstm.tasks import TASKS as TASK_FAMILIES
from attnlstm.tasks import build_task
from attnlstm.training.device import resolve_device
from attnlstm.training.optim import build_optimizer, build_scheduler
from tests.conftest import compose_config, run_cli

GROUPS = ("task", "model", "attention", "device", "trainer", "optim", "experiment")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (config_dir() / group).glob("*.yaml"))


def test_every_group_has_options() -> None:
    for group in GROUPS:
        assert options(group), group
    # the YAML options are the registries' names: nothing else lists them
    assert set(options("attention")) == {"none", *ATTENTION.names()}
    assert set(options("model")) == set(MODELS.names())


def test_registered_schemas_are_in_the_config_store() -> None:
    """The ConfigStore holds every registered task family's and model's schema, under the
    registry's name, and nothing else under schema/task and schema/model."""
    from hydra.core.config_store import ConfigStore

    repo = ConfigStore.instance().repo["schema"]
    stored_tasks = {name.removesuffix(".yaml") for name in repo["task"]}
    stored_models = {name.removesuffix(".yaml") for name in repo["model"]}
    assert stored_tasks == set(TASK_FAMILIES.names())
    assert stored_models == set(MODELS.names())
    for entry in TASK_FAMILIES.entries():
        assert repo["task"][f"{entry.name}.yaml"].node._metadata.object_type is entry.schema


def _expected_compatible(model: str, attention: str, target: str) -> bool:
    entry = MODELS.get(model)
    query_free = attention != "none" and not ATTENTION.get(attention).uses_query
    return (
        entry.predicts == target
        and {
            "none": attention == "none",
            "required": attention != "none",
            "query_free": query_free,
            "optional": True,
        }[entry.attention]
    )


#: the language-modelling tasks read a corpus; the hand-written fixture stands in for all
LM_FIXTURE = Path(__file__).parent / "fixtures" / "lm"
TASK_OVERRIDES = {
    name: ["task=lm", f"task.path={LM_FIXTURE}", "task.eval_batch_size=2"]
    for name in ("lm", "lm_ptb", "lm_wikitext2")
}
#: and the tagging tasks read a treebank: the hand-written CoNLL-U fixture stands in for EWT
CONLLU_FIXTURE = Path(__file__).parent / "fixtures" / "conllu"
TASK_OVERRIDES.update(
    {
        name: [
            "task=pos",
            f"task.path={CONLLU_FIXTURE}",
            "task.train_file=train.conllu",
            "task.valid_file=dev.conllu",
            "task.test_file=test.conllu",
        ]
        for name in ("pos", "pos_ewt")
    }
)
#: and the translation tasks read sentence pairs: the hand-written fixture stands in for eng-fra
ENG_FRA_FIXTURE = Path(__file__).parent / "fixtures" / "eng-fra"
TASK_OVERRIDES.update(
    {
        name: [f"task={name}", f"task.path={ENG_FRA_FIXTURE}"]
        for name in ("translation", "translation_full")
    }
)
TASK_OVERRIDES.update({name: [f"task={name}", "task.eval_size=8"] for name in ("reverse", "sort")})
#: and the text-classification tasks read labelled texts: a hand-written fixture in SST-2's layout
TEXT_FIXTURE = Path(__file__).parent / "fixtures" / "text_classification"
TASK_OVERRIDES.update(
    {
        name: [f"task={name}", f"task.path={TEXT_FIXTURE}"]
        for name in ("sst2", "text_classification")
    }
)
TASKS = sorted(
    {o for o in options("task") if o not in TASK_OVERRIDES or o.startswith(("rev", "sort"))}
    | {"lm", "pos", "translation", "text_classification"}
)


def _small_model(model: str) -> list[str]:
    if model == "lm":
        return ["model.hidden_size=4", "model.embedding_size=4"]
    if model == "tagger":
        return ["model.hidden_size=4", "model.word_embedding_size=4", "model.char_hidden_size=2"]
    if model == "seq2seq":
        return ["model.hidden_size=4", "model.embedding_size=4"]
    return ["model.hidden_size=4", "model.head_size=4"]


def _combinations() -> list:
    """Every task x model x attention; the default suite runs each task with every model and
    two attention settings (none, general) and every combination on two tasks (one reading
    features, one reading words); the rest are marked slow."""
    combos = []
    for task, model, attention in itertools.product(TASKS, options("model"), options("attention")):
        core = attention in ("none", "general") or task in ("addition", "text_classification")
        marks = () if core else (pytest.mark.slow,)
        combos.append(pytest.param(task, model, attention, marks=marks))
    return combos


@pytest.mark.parametrize(("task", "model", "attention"), _combinations())
def test_every_task_model_attention_combination(task: str, model: str, attention: str) -> None:
    """Each combination composes; it builds, or fails with a ConfigError sentence."""
    cfg = compose_config(
        [
            *TASK_OVERRIDES.get(task, [f"task={task}"]),
            f"model={model}",
            f"attention={attention}",
            *_small_model(model),
        ]
    )
    assert str(cfg.model.name) == model and str(cfg.attention.method) == attention
    spec = build_task(cfg.task, seed=0).spec
    if _expected_compatible(model, attention, spec.target):
        build_model(cfg.model, cfg.attention, spec)
    else:
        with pytest.raises(ConfigError, match=f"model={model}"):
            build_model(cfg.model, cfg.attention, spec)


@pytest.mark.parametrize(
    "group", ["device", "trainer", "optim", pytest.param("experiment", marks=pytest.mark.slow)]
)
def test_every_other_option_composes_and_builds(group: str) -> None:
    for option in options(group):
        cfg = compose_config([f"{group}={option}"])
        try:
            task = build_task(cfg.task, seed=0)
        except ConfigError as error:  # a language-modelling preset without its corpus here
            assert "data not found" in str(error)
            continue
        model = build_model(cfg.model, cfg.attention, task.spec)
        optimizer = build_optimizer(cfg.optim, model.parameters())
        build_scheduler(cfg.optim, optimizer, cfg.trainer.max_epochs, "max")
        if str(cfg.device.type) != "cuda":
            resolve_device(cfg.device.type, cfg.device.index)


def test_model_choice_sets_its_attention() -> None:
    assert str(compose_config(["model=lstm"]).attention.method) == "none"
    assert str(compose_config(["model=mean"]).attention.method) == "none"
    assert str(compose_config(["model=ffattn"]).attention.method) == "feedforward"
    # the command line wins over a model's own choice
    assert str(compose_config(["model=lstm", "attention=dot"]).attention.method) == "dot"


def test_default_experiment() -> None:
    cfg = compose_config()
    assert str(cfg.task.name) == "addition" and cfg.task.min_length == 100
    assert str(cfg.model.name) == "lstm_attn" and str(cfg.attention.method) == "feedforward"


def test_typo_in_a_key_names_the_key() -> None:
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["task.min_lenght=50"])
    assert "min_lenght" in str(error.value.__cause__ or error.value)
    assert isinstance(error.value.__cause__, ConfigAttributeError)
    assert "LongMemoryTaskConfig" in str(error.value.__cause__)


def test_wrong_type_names_the_key() -> None:
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["model.hidden_size=big"])
    cause = error.value.__cause__
    assert isinstance(cause, ValidationError)
    assert "model.hidden_size" in str(cause) and "Integer" in str(cause)


def test_unknown_enum_value_lists_the_choices() -> None:
    with pytest.raises(ConfigCompositionException) as error:
        compose_config(["optim.name=adamax"])
    assert "expected one of [adam, adamw, sgd]" in str(error.value.__cause__)


def test_unknown_group_option_lists_the_options() -> None:
    with pytest.raises(MissingConfigException) as error:
        compose_config(["attention=dott"])
    message = str(error.value)
    assert "attention/dott" in message
    assert all(name in message for name in ("additive", "concat", "scaled_dot"))
    options_listed = message.split("Available options")[1].split("Config search path")[0]
    assert "schema" not in options_listed  # the schemas stay out of the option list


@pytest.mark.slow  # six interpreter starts; tests/test_validation.py covers the checks in-process
def test_cli_rejects_bad_overrides_before_training(tmp_path: Path) -> None:
    cases = {
        "task.min_lenght=50": "Key 'min_lenght' not in 'LongMemoryTaskConfig'",
        "trainer.max_epochs=ten": "trainer.max_epochs",
        "device.type=tpu": "expected one of [auto, cpu, cuda]",
        "model=transformer": "Available options in 'model'",
        "model=lstm attention=dot": "model=lstm uses no attention",
        "task.min_length=5": "task.min_length=5 is not allowed",
    }
    for override, message in cases.items():
        result = run_cli(override.split(), cwd=tmp_path, check=False)
        assert result.returncode != 0, override
        assert message in result.stdout + result.stderr, (override, result.stderr)
        assert "epoch" not in result.stdout
    assert not (tmp_path / "outputs").exists()  # nothing was left behind
