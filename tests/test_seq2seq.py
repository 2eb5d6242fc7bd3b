"""Encoder-decoders: data (synthetic pairs, eng-fra reading, filter and split), the model
(both attention styles with every method: padding, vectorised = step-by-step, greedy and beam
search), the task's metrics, training end to end, heatmaps and ``attnlstm-translate``."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import sacrebleu
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from attnlstm.attention import ATTENTION_METHODS, make_attention
from attnlstm.config import TranslationTaskConfig
from attnlstm.data.seq2seq import (
    BOS_ID,
    EOS_ID,
    IGNORE,
    PAD_ID,
    Pair,
    collate,
    normalize_tutorial,
    read_sentence_pairs,
    split_by_source,
    synthetic_pairs,
    tutorial_filter,
)
from attnlstm.errors import ConfigError
from attnlstm.models import build_model
from attnlstm.models.seq2seq import Decoded, Seq2Seq
from attnlstm.tasks import build_task
from attnlstm.tasks.seq2seq import Seq2SeqMeter, Seq2SeqResult, Seq2SeqTask, corpus_bleu
from tests.conftest import compose_config, only_run_dir, run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "eng-fra"
SCRIPTS = Path(__file__).parents[1] / "scripts"
METHODS = ["none", *sorted(ATTENTION_METHODS)]
#: (style, input_feed) of every decoder: Luong with and without input feeding, Bahdanau
DECODERS = [("luong", False), ("luong", True), ("bahdanau", False)]
VARIANTS = [
    (style, feed, method)
    for style, feed in DECODERS
    for method in METHODS
    if method != "none" or (style == "luong" and not feed)
]


def small_model(
    method: str = "general",
    style: str = "luong",
    input_feed: bool = False,
    cell: str = "lstm",
    layers: int = 2,
    vocab: int = 12,
) -> Seq2Seq:
    torch.manual_seed(0)
    attention = None if method == "none" else make_attention(method, 16, 16)
    return Seq2Seq(
        vocab, vocab, 8, 16, layers, cell, True, 0.0, attention, style, input_feed
    ).eval()


def two_pairs():
    """A short and a long example, padded together."""
    return collate([[4, 5, 6], [7, 8, 9, 4, 5, 11]], [[4, 5], [6, 7, 8, 10]], [0, 1])


def translation_task(**overrides: object) -> Seq2SeqTask:
    cfg = TranslationTaskConfig(name="translation", path=str(FIXTURE), **overrides)
    return Seq2SeqTask(cfg, seed=0)


# -- data -------------------------------------------------------------------------------------


def test_tutorial_normalisation() -> None:
    assert normalize_tutorial("J'ai froid.") == "j ai froid ."
    assert normalize_tutorial("Ça alors !") == "ca alors !"
    assert normalize_tutorial("  Vous êtes gentil, Tom?") == "vous etes gentil tom ?"
    assert normalize_tutorial("I'm 20.") == "i m ."


def test_tutorial_filter() -> None:
    assert tutorial_filter("i am cold .", "j ai froid .")
    assert tutorial_filter("they re students .", "ils sont etudiants .")
    assert not tutorial_filter("tom is tall .", "tom est grand .")  # no listed prefix
    assert not tutorial_filter("i am " + "very " * 6 + "cold .", "j ai froid .")  # 10 tokens
    assert tutorial_filter("i am " + "very " * 5 + "cold .", "j ai froid .")  # 9 tokens


def test_reader_and_its_error_line(tmp_path: Path) -> None:
    pairs = read_sentence_pairs(FIXTURE / "eng-fra.txt")
    assert len(pairs) == 32 and pairs[2] == ("i am cold .", "j ai froid .")
    broken = tmp_path / "broken.txt"
    broken.write_text("Go.\tVa !\nno tab here\n")
    with pytest.raises(ValueError, match=r"broken.txt:2: expected 'English<TAB>French'"):
        read_sentence_pairs(broken)


def test_split_is_seeded_and_keeps_each_source_in_one_split() -> None:
    pairs = [(f"source {i % 40}", f"target {i}") for i in range(100)]
    train, valid, test = split_by_source(pairs, 0.1, 0.2, seed=7)
    again = split_by_source(pairs, 0.1, 0.2, seed=7)
    assert (train, valid, test) == again
    assert split_by_source(pairs, 0.1, 0.2, seed=8)[2] != test
    sources = [{p.source for p in split} for split in (train, valid, test)]
    assert len(sources[2]) == 8 and len(sources[1]) == 4 and len(sources[0]) == 28
    assert not (sources[0] & sources[1] or sources[0] & sources[2] or sources[1] & sources[2])
    assert sum(map(len, (train, valid, test))) == 100
    for pair in test:  # every translation of a source is one of its references
        expected = {tuple(t.split()) for s, t in pairs if tuple(s.split()) == pair.source}
        assert set(pair.references) == expected and pair.target in expected


@pytest.mark.parametrize("problem", ["reverse", "sort"])
def test_synthetic_pairs(problem: str) -> None:
    pairs = synthetic_pairs(problem, 200, symbols=7, min_length=3, max_length=9, seed=1)
    assert pairs == synthetic_pairs(problem, 200, symbols=7, min_length=3, max_length=9, seed=1)
    assert {len(p.source) for p in pairs} == set(range(3, 10))
    for pair in pairs:
        ids = [int(s[1:]) for s in pair.source]
        expected = ids[::-1] if problem == "reverse" else sorted(ids)
        assert [int(s[1:]) for s in pair.target] == expected
        assert all(0 <= i < 7 for i in ids)


def test_collate_adds_bos_and_eos_and_masks_padding() -> None:
    batch = two_pairs()
    assert batch.source.tolist() == [[4, 5, 6, PAD_ID, PAD_ID, PAD_ID], [7, 8, 9, 4, 5, 11]]
    assert batch.source_lengths.tolist() == [3, 6]
    assert batch.target_input.tolist() == [[BOS_ID, 4, 5, 0, 0], [BOS_ID, 6, 7, 8, 10]]
    assert batch.target_output.tolist() == [
        [4, 5, EOS_ID, IGNORE, IGNORE],
        [6, 7, 8, 10, EOS_ID],
    ]
    assert batch.target_tokens == 8


# -- the model --------------------------------------------------------------------------------


@pytest.mark.parametrize(("style", "input_feed", "method"), VARIANTS)
def test_an_example_is_the_same_alone_as_padded_in_a_batch(
    style: str, input_feed: bool, method: str
) -> None:
    model = small_model(method, style, input_feed)
    batch = two_pairs()
    together = model(batch.source, batch.source_lengths, batch.target_input)
    greedy_together = model.greedy(batch.source, batch.source_lengths, 8)
    beam_together = model.beam_search(batch.source, batch.source_lengths, 8, beam_size=3)
    for row in range(2):
        source_length = int(batch.source_lengths[row])
        target_length = int((batch.target_output[row] != IGNORE).sum())
        source = batch.source[row : row + 1, :source_length]
        target = batch.target_input[row : row + 1, :target_length]
        alone = model(source, batch.source_lengths[row : row + 1], target)
        torch.testing.assert_close(
            alone.logits[0], together.logits[row, :target_length], atol=1e-5, rtol=1e-5
        )
        if method != "none":
            weights = together.attention[row, :target_length]
            torch.testing.assert_close(
                alone.attention[0], weights[:, :source_length], atol=1e-5, rtol=1e-5
            )
            assert torch.all(weights[:, source_length:] == 0)  # padding gets no weight
            torch.testing.assert_close(weights.sum(-1), torch.ones(target_length))
        for decode, kwargs, result in (
            (model.greedy, {}, greedy_together),
            (model.beam_search, {"beam_size": 3}, beam_together),
        ):
            single = decode(source, batch.source_lengths[row : row + 1], 8, **kwargs)
            length = int(single.lengths[0])
            assert int(result.lengths[row]) == length
            assert torch.equal(single.tokens[0, :length], result.tokens[row, :length])


@pytest.mark.parametrize(("style", "input_feed", "method"), VARIANTS)
def test_teacher_forced_forward_equals_decoding_step_by_step(
    style: str, input_feed: bool, method: str
) -> None:
    """The all-at-once Luong path (and the looped ones) give what step() gives."""
    model = small_model(method, style, input_feed)
    assert model.vectorised == (method == "none" or (style == "luong" and not input_feed))
    batch = two_pairs()
    output = model(batch.source, batch.source_lengths, batch.target_input)
    memory, state = model.encode(batch.source, batch.source_lengths)
    feed = model._initial_feed(memory)
    for t in range(batch.target_input.size(1)):
        logits, state, feed, weights = model.step(batch.target_input[:, t], state, feed, memory)
        torch.testing.assert_close(output.logits[:, t], logits, atol=1e-5, rtol=1e-5)
        if weights is not None:
            torch.testing.assert_close(output.attention[:, t], weights, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize(("style", "input_feed", "method"), VARIANTS)
def test_beam_of_one_is_greedy_and_a_wider_beam_scores_at_least_as_well(
    style: str, input_feed: bool, method: str
) -> None:
    model = small_model(method, style, input_feed)
    batch = two_pairs()
    greedy = model.greedy(batch.source, batch.source_lengths, 6)
    one = model.beam_search(batch.source, batch.source_lengths, 6, beam_size=1)
    width = one.tokens.size(1)
    assert torch.equal(greedy.tokens[:, :width], one.tokens)
    assert torch.equal(greedy.lengths, one.lengths)
    torch.testing.assert_close(greedy.scores, one.scores * (greedy.lengths + 1).clamp(max=6))
    wide = model.beam_search(batch.source, batch.source_lengths, 6, beam_size=4, length_penalty=0)
    assert torch.all(wide.scores >= greedy.scores - 1e-5)


def test_beam_search_finds_the_best_sequence_by_brute_force() -> None:
    """With 2 steps over a 6-token vocabulary the beam (K = V) must find the most likely
    sequence among all continuations, EOS-ended or cut at the limit."""
    model = small_model("general", vocab=6)
    source = torch.tensor([[4, 5, 4]])
    lengths = torch.tensor([3])
    best = model.beam_search(source, lengths, 2, beam_size=6, length_penalty=0)
    memory, state0 = model.encode(source, lengths)
    candidates = []
    logits, state1, _, _ = model.step(torch.tensor([BOS_ID]), state0, None, memory)
    first = torch.log_softmax(logits, -1)[0]
    for a in range(6):
        if a == EOS_ID:
            candidates.append((first[a].item(), [a]))
            continue
        logits, _, _, _ = model.step(torch.tensor([a]), state1, None, memory)
        second = torch.log_softmax(logits, -1)[0]
        candidates.extend((first[a].item() + second[b].item(), [a, b]) for b in range(6))
    score, tokens = max(candidates)
    assert best.scores.item() == pytest.approx(score, abs=1e-5)
    assert best.tokens[0, : len(tokens)].tolist() == tokens


def test_beam_search_does_not_stop_on_unlikely_early_eos() -> None:
    """Token 4 has probability ~1 at every step and EOS ~e^-9: the likely hypothesis never
    ends before the limit, while every step offers an unlikely EOS. Stopping after K finished
    hypotheses would return one of those (score ~ -9); the search must return 4 4 ... 4."""
    model = small_model("general")
    with torch.no_grad():
        model.output.weight.zero_()
        model.output.bias.zero_()
        model.output.bias[4] = 10.0
        model.output.bias[EOS_ID] = 1.0  # the second most likely token, ~e^-9
    batch = two_pairs()
    greedy = model.greedy(batch.source, batch.source_lengths, 8)
    beam = model.beam_search(batch.source, batch.source_lengths, 8, beam_size=3, length_penalty=0)
    assert beam.tokens.tolist() == [[4] * 8, [4] * 8] == greedy.tokens.tolist()
    assert beam.lengths.tolist() == [8, 8]
    torch.testing.assert_close(beam.scores, greedy.scores)


def test_decoding_stops_at_eos_and_pads_after_it() -> None:
    model = small_model("dot")
    with torch.no_grad():  # make EOS the most likely token at every step
        model.output.bias.zero_()
        model.output.bias[EOS_ID] = 100.0
    batch = two_pairs()
    for decoded in (
        model.greedy(batch.source, batch.source_lengths, 9),
        model.beam_search(batch.source, batch.source_lengths, 9, beam_size=3),
    ):
        assert decoded.lengths.tolist() == [0, 0]
        assert decoded.tokens[:, 0].tolist() == [EOS_ID, EOS_ID]
        assert decoded.tokens.size(1) == 1


def test_bidirectional_encoder_starts_the_decoder_from_both_directions() -> None:
    model = small_model("none", layers=1)
    source = torch.tensor([[4, 5, 6, 7]])
    memory, (hidden, cell) = model.encode(source, torch.tensor([4]))
    rnn = model.encoder.rnn
    _, (h, c) = rnn(model.encoder.embedding(source))
    torch.testing.assert_close(hidden[0, 0], torch.cat([h[0, 0], h[1, 0]]))
    torch.testing.assert_close(cell[0, 0], torch.cat([c[0, 0], c[1, 0]]))
    states = memory.states
    torch.testing.assert_close(states[0, -1, :8], h[0, 0])  # forward half ends at the end
    torch.testing.assert_close(states[0, 0, 8:], h[1, 0])  # backward half at the start


def test_gru_cell_and_scheduled_sampling() -> None:
    model = small_model("additive", "bahdanau", cell="gru").train()
    batch = two_pairs()
    forced = model(batch.source, batch.source_lengths, batch.target_input).logits
    model.teacher_forcing = 0.0  # every step reads the model's own previous prediction
    torch.manual_seed(1)
    sampled = model(batch.source, batch.source_lengths, batch.target_input).logits
    torch.testing.assert_close(forced[:, 0], sampled[:, 0])  # the first step reads BOS
    assert not torch.allclose(forced[:, 1:], sampled[:, 1:])
    sampled.sum().backward()
    assert model.encoder.embedding.weight.grad is not None


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["model.attention_style=bahdanau", "model.input_feed=true"], "input feeding is Luong"),
        (["model.hidden_size=7"], "must be even"),
        (["model.teacher_forcing=1.5"], r"model\.teacher_forcing=1\.5 is not allowed"),
        (["attention=none", "model.input_feed=true"], "needs attention"),
    ],
)
def test_bad_model_settings_are_config_errors(overrides: list[str], message: str) -> None:
    cfg = compose_config(["task=reverse", "model=seq2seq", "task.eval_size=4", *overrides])
    task = build_task(cfg.task, seed=0)
    with pytest.raises(ConfigError, match=message):
        build_model(cfg.model, cfg.attention, task.spec)


# -- the task ---------------------------------------------------------------------------------


def test_translation_task_reads_filters_and_splits_the_fixture() -> None:
    task = translation_task(valid_fraction=0.2, test_fraction=0.2)
    splits = [task.train_pairs, task.eval_pairs["val"], task.eval_pairs["test"]]
    assert sum(map(len, splits)) == 27  # the tutorial filter keeps 27 of the 32 pairs
    assert all(
        p.target[:2] in {("i", "am"), ("i", "m")} or p.target[1] in {"is", "are", "s", "re"}
        for split in splits
        for p in split
    )
    cold = next(p for split in splits for p in split if p.source == ("j", "ai", "froid", "."))
    assert set(cold.references) == {("i", "am", "cold", "."), ("i", "m", "cold", ".")}
    english_source = translation_task(source_language="eng", filter="none")
    everything = [
        p
        for split in (english_source.train_pairs, *english_source.eval_pairs.values())
        for p in split
    ]
    english = {tuple(e.split()) for e, _ in read_sentence_pairs(FIXTURE / "eng-fra.txt")}
    assert len(everything) == 32 and {p.source for p in everything} == english
    assert task.spec.target == "sequence"
    assert task.spec.input_size == len(task.source_vocab) and task.monitor.metric == "bleu"


def test_missing_translation_data_says_where_it_looked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="data not found"):
        Seq2SeqTask(TranslationTaskConfig(name="translation", path=str(tmp_path)), seed=0)


def test_meter_counts_exact_matches_against_any_reference_and_bleu_is_sacrebleus() -> None:
    task = translation_task(filter="none", valid_fraction=0.3, test_fraction=0.3)
    pairs = [
        Pair(("a",), ("i", "am", "cold", "."), (("i", "am", "cold", "."), ("i", "m", "cold", "."))),
        Pair(("b",), ("he", "is", "tall", "."), (("he", "is", "tall", "."),)),
    ]
    meter = Seq2SeqMeter(task.target_vocab, pairs)
    vocab = task.target_vocab
    outputs = [["i", "m", "cold", "."], ["he", "is", "late", "."]]  # second reference; a miss
    tokens = torch.zeros(2, 5, dtype=torch.long)
    for row, words in enumerate(outputs):
        tokens[row, :4] = torch.tensor(vocab.encode(words))
        tokens[row, 4] = EOS_ID
    decoded = Decoded(tokens, torch.tensor([4, 4]), None, torch.zeros(2))
    batch = collate([[4], [5]], [vocab.encode(p.target) for p in pairs], [0, 1])
    logits = torch.zeros(2, batch.target_input.size(1), len(vocab))
    logits.scatter_(2, batch.target_output.clamp(min=0).unsqueeze(-1), 1.0)  # all correct
    meter.update(Seq2SeqResult(logits, None, decoded), batch)
    metrics = meter.compute()
    assert metrics["exact"] == 0.5
    assert metrics["acc"] == 1.0
    expected = sacrebleu.corpus_bleu(
        ["i m cold .", "he is late ."],
        [["i am cold .", "he is tall ."], ["i m cold .", None]],
        tokenize="none",
    ).score
    assert metrics["bleu"] == pytest.approx(expected) and 0 < metrics["bleu"] < 100
    assert corpus_bleu(["a b c d"], [["a b c d"]]) == pytest.approx(100.0)


def test_bleu_of_tokenised_text_logs_no_detokenize_warning(caplog) -> None:
    """The tasks' text is tokenised on purpose: sacrebleu's "forgot to detokenize" warning
    filled every translation run's log, once per evaluation."""
    hypotheses = ["i m cold .", "he is late ."] * 60  # sacrebleu warns from 100 such lines on
    with caplog.at_level("WARNING"):
        score = corpus_bleu(hypotheses, [["i am cold ."], ["he is late ."]] * 60)
    assert 0 < score < 100
    assert not [r for r in caplog.records if "detokenize" in r.getMessage()]


@pytest.mark.slow  # 35 s; test_translate_command_after_training trains end to end by default
def test_reverse_trains_end_to_end_with_heatmaps_and_length_buckets(tmp_path: Path) -> None:
    """A small reverse problem is learned in seconds; the test split reports greedy and beam
    metrics and exact match per length bucket; attention heatmaps reach TensorBoard."""
    run_cli(
        [
            "task=reverse",
            "model=seq2seq",
            "attention=dot",
            "task.symbols=6",
            "task.min_length=2",
            "task.max_length=6",
            "task.length_buckets=[2,4]",
            "task.batches_per_epoch=40",
            "task.eval_size=200",
            "task.beam_size=3",
            "model.hidden_size=64",
            "model.embedding_size=16",
            "optim.lr=0.01",
            "trainer.max_epochs=8",
            "trainer.attention_images=2",
            "trainer.progress_bar=false",
            "device=cpu",
            "hydra.run.dir=run",
        ],
        cwd=tmp_path,
    )
    run = only_run_dir(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["test"]
    assert test["test/exact"] >= 0.9, test
    assert test["test/beam_exact"] >= test["test/exact"] - 0.02
    assert {"test/exact_len_2_3", "test/exact_len_4_6", "test/bleu", "test/acc"} <= set(test)
    events = EventAccumulator(str(run), size_guidance={"images": 0}).Reload()
    assert {"val/attention/0", "val/attention/1"} <= set(events.Tags()["images"])
    assert "val/exact" in events.Tags()["scalars"]
    table = subprocess.run(
        [sys.executable, str(SCRIPTS / "seq2seq_table.py"), str(tmp_path)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "| exact | beam_exact | exact_len_2_3 | exact_len_4_6 |" in table
    assert f"| luong | dot | {100 * test['test/exact']:.1f} | " in table

    # attnlstm-evaluate: the same test numbers from the checkpoint; other decoding settings
    def evaluate(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "attnlstm.cli.evaluate", str(run), *args]
        return subprocess.run(command, capture_output=True, text=True)

    out = tmp_path / "eval.json"
    again = evaluate("--out", str(out))
    assert again.returncode == 0, again.stderr
    metrics_again = json.loads(out.read_text())["metrics"]
    assert metrics_again == pytest.approx({k.removeprefix("test/"): v for k, v in test.items()})
    greedy_only = json.loads(evaluate("--set", "task.beam_size=1").stdout)["metrics"]
    assert "beam_exact" not in greedy_only and greedy_only["exact"] == metrics_again["exact"]
    assert evaluate("--out", str(out)).returncode == 2  # never over an existing file
    bad = evaluate("--set", "model.hidden_size=3")
    assert bad.returncode == 2 and "task.<key>=<value>" in bad.stderr
    # the table can take a run's test numbers from such a file instead
    assert evaluate("--set", "task.beam_size=1", "--out", str(run / "greedy.json")).returncode == 0
    table = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "seq2seq_table.py"),
            str(tmp_path),
            "--eval-file",
            "greedy.json",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"| luong | dot | {100 * greedy_only['exact']:.1f} |  | " in table  # no beam column


@pytest.mark.slow
def test_translate_command_after_training(tmp_path: Path) -> None:
    run_cli(
        [
            "task=translation",
            f"task.path={FIXTURE}",
            "model=seq2seq",
            "attention=additive",
            "model.attention_style=bahdanau",
            "model.hidden_size=16",
            "model.embedding_size=8",
            "trainer.max_epochs=2",
            "trainer.progress_bar=false",
            "device=cpu",
            "hydra.run.dir=run",
        ],
        cwd=tmp_path,
    )
    run = only_run_dir(tmp_path)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "attnlstm.cli.translate",
            str(run),
            "Je suis fatigué.",
            "Il est grand !",
            "--beam",
            "3",
            "--png",
            str(tmp_path / "maps"),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("je suis fatigue . -> ")
    assert lines[1].startswith("il est grand ! -> ")
    pngs = sorted((tmp_path / "maps").glob("*.png"))
    assert len(pngs) == 2
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    bad = subprocess.run(
        [sys.executable, "-m", "attnlstm.cli.translate", str(tmp_path / "nowhere"), "x"],
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "error:" in bad.stderr


def test_max_decode_length_follows_the_source() -> None:
    task = translation_task(max_decode_ratio=2.0, max_decode_extra=3)
    assert task.max_decode_length(5) == 13
    assert task.max_decode_length(1) == math.ceil(2.0) + 3
