"""TensorBoard for reading: the HParams tab opens on the keys that define the experiment and
shows every run's final metrics; pooling attention is a labelled figure with the marked steps.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from omegaconf import OmegaConf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from attnlstm.config import (
    AttentionConfig,
    LongMemoryTaskConfig,
    SequenceModelConfig,
    TextClassificationTaskConfig,
)
from attnlstm.contracts import AttentionMap
from attnlstm.loggers import experiment_hparams, flatten_config
from attnlstm.loggers.base import BOOKKEEPING_KEYS
from attnlstm.models import build_model
from attnlstm.plots import attention_figure
from attnlstm.tasks import build_task
from tests.conftest import TINY, compose_config, run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "text_classification"
DEFINING = ["task.name", "model.name", "attention.method", "seed"]
#: keys of the default config that say how a run is done, not what it is
BOOKKEEPING = {
    "data_dir",
    "resume",
    "trainer.progress_bar",
    "trainer.log_every_n_steps",
    "trainer.attention_images",
}


# -- which hyperparameters, in which order ---------------------------------------------------


def test_experiment_hparams_orders_and_filters() -> None:
    params: dict[str, Any] = {
        "optim.lr": 0.01,
        "trainer.max_epochs": 3,
        "trainer.progress_bar": True,
        "trainer.log_every_n_steps": 10,
        "trainer.attention_images": 4,
        "task.min_length": 100,
        "task.name": "addition",
        "task.max_length": "None",  # flatten_config's None
        "model.hidden_size": 100,
        "model.name": "lstm_attn",
        "model.dropout": None,
        "attention.hidden_dim": 8,
        "attention.method": "feedforward",
        "device.type": "cpu",
        "logger.tensorboard.name": "tensorboard",
        "seed": 3,
        "resume": "None",
        "data_dir": "/data",
        "notes": "extra",
        "task.batch_size": 64,
    }
    assert list(experiment_hparams(params).items()) == [
        ("task.name", "addition"),
        ("model.name", "lstm_attn"),
        ("attention.method", "feedforward"),
        ("seed", 3),
        ("task.min_length", 100),  # then section by section, each in the config's order
        ("task.batch_size", 64),
        ("model.hidden_size", 100),
        ("attention.hidden_dim", 8),
        ("optim.lr", 0.01),
        ("trainer.max_epochs", 3),
        ("notes", "extra"),  # keys of no known section last
    ]


@pytest.mark.parametrize("overrides", [[], ["logger=many", "task=multiplication"]])
def test_experiment_hparams_of_real_configs(overrides: list[str]) -> None:
    config = OmegaConf.to_container(compose_config(overrides), resolve=True, enum_to_str=True)
    assert isinstance(config, dict)
    flat = flatten_config(config)
    kept = experiment_hparams(flat)
    assert list(kept)[:4] == DEFINING
    assert "None" not in kept.values()
    assert not BOOKKEEPING & set(kept)
    assert not [k for k in kept if k.startswith(("device.", "logger."))]
    sections = [k.split(".")[0] for k in list(kept)[4:]]
    assert sections == sorted(
        sections, key=["task", "model", "attention", "optim", "trainer"].index
    )
    # nothing else is lost
    assert BOOKKEEPING <= BOOKKEEPING_KEYS
    assert set(kept) == {
        k
        for k, v in flat.items()
        if v != "None" and k not in BOOKKEEPING_KEYS and not k.startswith(("device.", "logger."))
    }


# -- the pooling attention figure ------------------------------------------------------------


def _addition(
    model: str, mask_padding: bool, attention: str = "feedforward"
) -> tuple[Any, Any, Any]:
    """A tiny addition task, a ``model`` for it, the first 3 validation sequences, the output."""
    task = build_task(
        LongMemoryTaskConfig(
            min_length=20, eval_size=8, eval_batch_size=8, mask_padding=mask_padding
        ),
        seed=0,
    )
    net = build_model(
        SequenceModelConfig(name=model, hidden_size=8, head_size=8),
        AttentionConfig(method=attention),
        task.spec,
    ).eval()
    batch = task.eval_batches("val")[0].select(3)
    with torch.no_grad():
        output = task.forward(net, batch)
    return task, batch, output


def _scatter_points(figure: Any, label: str) -> list[tuple[int, int]]:
    """(x, y) of the points of the scatter labelled ``label`` in ``figure``'s heatmap."""
    axes = figure.axes[0]
    [points] = [c for c in axes.collections if c.get_label() == label]
    return sorted((round(x), round(y)) for x, y in points.get_offsets())


@pytest.mark.parametrize("model", ["lstm_attn", "ffattn"])
def test_addition_figure_marks_the_steps_whose_values_are_added(model: str) -> None:
    import matplotlib.pyplot as plt

    task, batch, output = _addition(model, mask_padding=True)
    maps = task.attention_maps(output, batch)
    assert maps is not None and len(maps) == 1
    figure = attention_figure(maps[0])
    try:
        # the marked steps, read from the marker channel: x the step, y the sequence's row
        markers = batch.inputs[..., 1]
        expected = sorted((int(t), int(row)) for row, t in (markers == 1).nonzero().tolist())
        assert len(expected) == 2 * len(batch)
        [label] = [k for k in maps[0].marks if k.startswith("marked steps")]
        assert _scatter_points(figure, label) == expected

        axes, colour_bar = figure.axes  # the heatmap and its colour bar
        assert axes.get_xlabel() == "time step" and axes.get_ylabel() == "sequence"
        assert axes.get_title() == "addition: attention over the input steps"
        assert colour_bar.get_ylabel() == "attention weight"
        rows = [tick.get_text() for tick in axes.get_yticklabels()]
        assert len(rows) == 3 and all(r.startswith("y ") and ", pred " in r for r in rows)
        legend = [t.get_text() for t in figure.legends[0].get_texts()]
        assert legend == [label, "padding"]

        # one row per sequence, padding masked, only as many steps as the longest one
        [image] = axes.get_images()
        data = image.get_array()
        lengths = batch.lengths
        assert data.shape == (3, int(lengths.max()))
        steps = torch.arange(data.shape[1])
        assert (data.mask == (steps[None] >= lengths[:, None]).numpy()).all()
        assert data.filled(0).sum(axis=1) == pytest.approx([1.0] * 3, abs=1e-5)
    finally:
        plt.close(figure)


def test_unmasked_addition_figure_ticks_each_last_step() -> None:
    """Without masking the model reads the padding as data: every step is drawn, and the
    sequence's last real step is marked instead."""
    import matplotlib.pyplot as plt

    task, batch, output = _addition("lstm_attn", mask_padding=False)
    assert batch.lengths is None
    [heatmap] = task.attention_maps(output, batch)
    figure = attention_figure(heatmap)
    try:
        label = "last step (padding follows, unmasked)"
        ends = [
            (int(t), row) for row in range(3) for t in (batch.inputs[row, :, 1] == -1).nonzero()
        ]
        last = sorted(max(t for t, r in ends if r == row) for row in range(3))
        assert sorted(x for x, _ in _scatter_points(figure, label)) == last
        [image] = figure.axes[0].get_images()
        assert image.get_array().shape == tuple(batch.inputs.shape[:2])
        assert not image.get_array().mask.any()
    finally:
        plt.close(figure)


def test_text_classification_figure_per_text_labelled_with_its_words() -> None:
    import matplotlib.pyplot as plt

    task = build_task(TextClassificationTaskConfig(name="sst2", path=str(FIXTURE)), seed=0)
    net = build_model(
        SequenceModelConfig(name="lstm_attn", hidden_size=8, head_size=8),
        AttentionConfig(method="feedforward"),
        task.spec,
    ).eval()
    batch = task.eval_batches("val")[0].select(2)
    with torch.no_grad():
        output = task.forward(net, batch)
    maps = task.attention_maps(output, batch)
    assert maps is not None and len(maps) == len(batch)
    for row, heatmap in enumerate(maps):
        length = int(batch.lengths[row])
        assert heatmap.weights.shape == (1, length)
        assert heatmap.key_labels == task.vocab.decode(batch.inputs[row, :length].tolist())
        figure = attention_figure(heatmap)
        try:
            axes = figure.axes[0]
            assert [t.get_text() for t in axes.get_xticklabels()] == heatmap.key_labels
            assert axes.get_yticklabels()[0].get_text().startswith("gold ")
        finally:
            plt.close(figure)


def test_a_task_without_pooling_attention_draws_no_heatmap() -> None:
    task, batch, output = _addition("lstm", mask_padding=True, attention="none")
    assert output.attention is None
    assert task.attention_maps(output, batch) is None


def test_more_marks_than_styles_are_all_drawn() -> None:
    import matplotlib.pyplot as plt

    marks = {f"mark {i}": torch.tensor([[i]]) for i in range(5)}
    figure = attention_figure(
        AttentionMap(torch.full((1, 6), 1 / 6), ["row"], list("abcdef"), marks=marks)
    )
    try:
        assert [t.get_text() for t in figure.legends[0].get_texts()] == list(marks)
    finally:
        plt.close(figure)


# -- a short run, read back as TensorBoard reads it ------------------------------------------


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, EventAccumulator]:
    """A tiny default run (addition, lstm_attn; 2 epochs, 2 attention examples)."""
    cwd = tmp_path_factory.mktemp("tensorboard_reading")
    run_dir = cwd / "run"
    run_cli([*TINY, f"hydra.run.dir={run_dir}"], cwd)
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    events.Reload()
    return run_dir, events


def _hparams_plugin(events: EventAccumulator) -> tuple[Any, Any]:
    """The experiment and the session-start info of the run's hparams summary."""
    content = events.PluginTagToContent("hparams")
    parse = plugin_data_pb2.HParamsPluginData.FromString
    return (
        parse(content["_hparams_/experiment"]).experiment,
        parse(content["_hparams_/session_start_info"]).session_start_info,
    )


def test_hparams_tab_lists_the_defining_keys_first(
    tiny_run: tuple[Path, EventAccumulator],
) -> None:
    run_dir, events = tiny_run
    experiment, start = _hparams_plugin(events)
    config = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
    assert isinstance(config, dict)
    expected = experiment_hparams(flatten_config(config))
    names = [info.name for info in experiment.hparam_infos]
    assert names == list(expected)  # filtered, in the intended order
    assert names[:4] == DEFINING
    assert set(start.hparams) == set(expected)
    assert not BOOKKEEPING & set(start.hparams)
    assert not [k for k in start.hparams if k.startswith(("device.", "logger."))]
    assert "task.max_length" not in start.hparams  # None in the config
    # TensorBoard sorts the tab's columns by `differs`, then by name: the defining keys lead
    assert [info.name for info in experiment.hparam_infos if info.differs] == DEFINING
    assert start.hparams["model.name"].string_value == "lstm_attn"
    assert start.hparams["seed"].number_value == 0
    assert start.hparams["task.mask_padding"].WhichOneof("kind") == "bool_value"


def test_hparams_tab_has_a_final_value_for_every_metric(
    tiny_run: tuple[Path, EventAccumulator],
) -> None:
    """The tab shows each metric tag's last scalar of the same run: every tag the summary
    names is logged, test/ once, val/ every epoch (its last value is the final epoch's)."""
    _, events = tiny_run
    experiment, _ = _hparams_plugin(events)
    tags = [metric.name.tag for metric in experiment.metric_infos]
    assert tags == ["val/loss", "val/accuracy", "test/loss", "test/accuracy"]
    assert all(metric.name.group == "" for metric in experiment.metric_infos)  # this run
    scalars = set(events.Tags()["scalars"])
    for tag in tags:
        assert tag in scalars, tag
        assert len(events.Scalars(tag)) == (1 if tag.startswith("test/") else 2)


def test_pooling_attention_is_logged_as_a_figure(
    tiny_run: tuple[Path, EventAccumulator],
) -> None:
    from PIL import Image

    _, events = tiny_run
    assert "val/attention/0" in events.Tags()["images"]
    logged = events.Images("val/attention/0")
    assert len(logged) == 2  # after each epoch
    picture = Image.open(io.BytesIO(logged[-1].encoded_image_string))
    # a rendered figure (labels, colour bar, legend), not a few grey pixels per weight
    assert picture.mode in ("RGB", "RGBA")
    assert picture.width >= 300 and picture.height >= 200
