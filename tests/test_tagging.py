"""POS tagging: the CoNLL-U reader, the tasks, the tagger model and ``attnlstm-tag``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import torch
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from attnlstm.attention import make_attention
from attnlstm.config import TaggingTaskConfig
from attnlstm.data.conllu import ConlluError, TaggedSentence, read_conllu
from attnlstm.data.tagging import IGNORE, UNK_ID, TaggingVocab, collate, encode_sentence
from attnlstm.errors import ConfigError
from attnlstm.models import build_model
from attnlstm.models.tagger import (
    CHAR_LENGTH_BUCKETS,
    BiLSTMTagger,
    CharCNNEncoder,
    CharLSTMEncoder,
    TaggerOutput,
    distinct_rows,
)
from attnlstm.paths import data_dir
from attnlstm.tasks import build_task
from attnlstm.tasks.tagging import TaggingMeter, TaggingTask
from tests.conftest import compose_config, only_run_dir, run_cli

FIXTURE = Path(__file__).parent / "fixtures" / "conllu"
METHODS = ["dot", "scaled_dot", "general", "concat", "additive", "feedforward"]
POS_TINY = [
    "task=pos",
    f"task.path={FIXTURE}",
    "task.train_file=train.conllu",
    "task.valid_file=dev.conllu",
    "task.test_file=test.conllu",
    "task.batch_size=2",
    "model=tagger",
    "model.word_embedding_size=8",
    "model.char_embedding_size=4",
    "model.char_hidden_size=4",
    "model.hidden_size=8",
    "trainer.max_epochs=2",
    "trainer.progress_bar=false",
    "device=cpu",
]


def plain_files_config(folder: Path, **overrides: object) -> TaggingTaskConfig:
    """``task=pos`` over train/dev/test.conllu in ``folder``."""
    return TaggingTaskConfig(
        name="pos",
        path=str(folder),
        train_file="train.conllu",
        valid_file="dev.conllu",
        test_file="test.conllu",
        **overrides,
    )


def fixture_task(**overrides: object) -> TaggingTask:
    return TaggingTask(plain_files_config(FIXTURE, **overrides), seed=0)


# -- the CoNLL-U reader ---------------------------------------------------------------------


def test_reader_reads_words_and_skips_comments_ranges_and_empty_nodes() -> None:
    sentences = read_conllu(FIXTURE / "train.conllu")
    assert [s.words for s in sentences] == [
        ("The", "dog", "ate", "the", "apple", "."),
        ("I", "do", "n't", "know", "."),  # not the multiword token "don't"
        ("Everybody", "read", "that", "book"),  # not the empty node 4.1
        ("Dogs", "read", "."),  # the last sentence, with no blank line after it
    ]
    assert sentences[1].tags == ("PRON", "AUX", "PART", "VERB", "PUNCT")


def test_reader_takes_xpos_when_asked() -> None:
    sentences = read_conllu(FIXTURE / "train.conllu", tag_column="xpos")
    assert sentences[1].tags == ("PRP", "VBP", "RB", "VB", ".")
    with pytest.raises(ValueError, match="upos or xpos"):
        read_conllu(FIXTURE / "train.conllu", tag_column="lemma")


def test_reader_accepts_crlf_line_ends_and_a_byte_order_mark(tmp_path: Path) -> None:
    text = (FIXTURE / "train.conllu").read_text()
    path = tmp_path / "windows.conllu"
    path.write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    assert read_conllu(path) == read_conllu(FIXTURE / "train.conllu")


def _line(*fields: str) -> str:
    return "\t".join(fields) + "\n"


GOOD = _line("1", "Hi", "hi", "INTJ", "UH", "_", "0", "root", "_", "_")


@pytest.mark.parametrize(
    ("bad_line", "problem"),
    [
        ("1 Hi hi INTJ UH _ 0 root _ _\n", "expected 10 tab-separated fields, found 1"),
        (_line("1", "Hi", "hi", "INTJ", "UH"), "expected 10 tab-separated fields, found 5"),
        (_line("x", "Hi", "hi", "INTJ", "UH", "_", "0", "root", "_", "_"), "ID 'x'"),
        (_line("3", "Hi", "hi", "INTJ", "UH", "_", "0", "root", "_", "_"), "expected 2"),
        (_line("2", "Hi", "hi", "_", "UH", "_", "0", "root", "_", "_"), "no UPOS tag"),
        (_line("2", "", "hi", "INTJ", "UH", "_", "0", "root", "_", "_"), "empty FORM"),
        (_line("4-5", "Hi", "_", "_", "_", "_", "_", "_", "_", "_"), "range 4-5"),
    ],
)
def test_malformed_lines_fail_with_file_line_and_problem(
    tmp_path: Path, bad_line: str, problem: str
) -> None:
    path = tmp_path / "bad.conllu"
    path.write_text("# sent_id = 1\n" + GOOD + bad_line + "\n")
    with pytest.raises(ConlluError, match=problem) as caught:
        read_conllu(path)
    assert str(caught.value).startswith(f"{path}:3: ")
    assert caught.value.line_number == 3


def test_a_malformed_treebank_stops_the_task_with_the_reader_message(tmp_path: Path) -> None:
    for name in ("train.conllu", "dev.conllu", "test.conllu"):
        (tmp_path / name).write_text((FIXTURE / "train.conllu").read_text())
    (tmp_path / "dev.conllu").write_text(GOOD + "2\tbroken\n")
    cfg = plain_files_config(tmp_path)
    with pytest.raises(ConfigError, match=r"dev\.conllu:2: expected 10 tab-separated fields"):
        TaggingTask(cfg, seed=0)


@pytest.mark.data
def test_ewt_has_the_published_counts() -> None:
    folder = data_dir() / "ud-english-ewt"
    if not (folder / "en_ewt-ud-train.conllu").is_file():
        pytest.skip(f"UD English EWT not found under {folder}; attnlstm-download ud-english-ewt")
    task = build_task(TaggingTaskConfig(name="pos_ewt"), seed=0)
    splits = [task.train_data, task.eval_data["val"], task.eval_data["test"]]
    counts = [(len(split), sum(len(s) for s in split)) for split in splits]
    assert counts == [(12_544, 204_577), (2_001, 25_147), (2_077, 25_094)]
    assert len(task.vocab.tags) == 17  # the universal tag set


def test_missing_treebank_says_where_it_looked_and_how_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="attnlstm-download ud-english-ewt") as caught:
        TaggingTask(TaggingTaskConfig(name="pos_ewt"), seed=0, configured_data_dir=str(tmp_path))
    assert str(tmp_path / "ud-english-ewt" / "en_ewt-ud-train.conllu") in str(caught.value)


# -- vocabularies, batches, metrics ---------------------------------------------------------


def test_vocabulary_min_count_lowercasing_and_unseen_words() -> None:
    train = read_conllu(FIXTURE / "train.conllu")
    vocab = TaggingVocab.from_sentences(train, min_count=2)
    assert vocab.words.words[:2] == ["<pad>", "<unk>"]
    # only "read" and "." occur twice (case-sensitively: "The" and "the" differ)
    assert set(vocab.words.words[2:]) == {"read", "."}
    lower = TaggingVocab.from_sentences(train, min_count=2, lowercase=True)
    assert set(lower.words.words[2:]) == {"read", ".", "the"}
    encoded = encode_sentence(lower, ["THE", "Cat", "read"])
    assert encoded.words.tolist() == [lower.words.ids["the"], UNK_ID, lower.words.ids["read"]]
    assert encoded.unseen.tolist() == [False, True, False]  # seen once is still seen
    # characters keep their case: "T" and "C" are different characters, "C" unseen
    assert encoded.chars[0, 0].item() == lower.chars.ids["T"]
    assert encoded.chars[1, 0].item() == UNK_ID


def test_collate_pads_words_characters_and_targets() -> None:
    vocab = TaggingVocab.from_sentences(read_conllu(FIXTURE / "train.conllu"))
    long = encode_sentence(vocab, ["The", "dog", "ate"], ["DET", "NOUN", "VERB"])
    short = encode_sentence(vocab, ["Everybody"], ["PRON"])
    batch = collate([long, short])
    assert batch.words.shape == (2, 3) and batch.chars.shape == (2, 3, len("Everybody"))
    assert batch.lengths.tolist() == [3, 1] and len(batch) == 4
    assert batch.mask.tolist() == [[True, True, True], [True, False, False]]
    assert batch.targets[1, 1:].tolist() == [IGNORE, IGNORE]
    assert batch.char_lengths.tolist() == [[3, 3, 3], [9, 0, 0]]
    assert batch.words[1, 1:].tolist() == [0, 0]


def test_meter_counts_real_words_unseen_words_and_each_tag() -> None:
    class Output:
        logits = torch.tensor(
            # sentence 1: right, wrong; sentence 2: right, then padding (predicted wrong)
            [[[5.0, 0.0], [5.0, 0.0]], [[0.0, 5.0], [5.0, 0.0]]]
        )

    vocab = TaggingVocab.from_sentences([TaggedSentence(("a", "b"), ("X", "Y"))])
    batch = collate(
        [
            encode_sentence(vocab, ["a", "new"], ["X", "Y"]),  # "new" is unseen
            encode_sentence(vocab, ["b"], ["Y"]),
        ]
    )
    meter = TaggingMeter(vocab.tags.words, per_tag=True)
    meter.update(Output(), batch)
    metrics = meter.compute()
    assert metrics["acc"] == pytest.approx(2 / 3)  # padding not counted
    assert metrics["unseen_acc"] == 0.0 and metrics["unseen_words"] == 1.0
    assert metrics["acc_X"] == 1.0 and metrics["acc_Y"] == pytest.approx(1 / 2)
    assert "acc_X" not in TaggingMeter(vocab.tags.words).compute()  # per tag at test only


def test_training_batches_cover_every_sentence_once_reproducibly() -> None:
    task = fixture_task(batch_size=3)
    batches = list(task.train_batches(1))
    assert len(batches) == task.num_train_batches() == 2
    assert sum(len(b.lengths) for b in batches) == len(task.train_data)
    sizes = sorted(int(b.lengths.sum()) for b in batches)
    assert sum(sizes) == sum(len(s) for s in task.train_data)
    again = fixture_task(batch_size=3)
    assert all(
        torch.equal(a.words, b.words) for a, b in zip(batches, again.train_batches(1), strict=True)
    )


def test_word_dropout_replaces_real_words_by_unk_only() -> None:
    plain = fixture_task(batch_size=4)
    dropped = fixture_task(batch_size=4, word_dropout=0.5)
    for clean, noisy in zip(plain.train_batches(1), dropped.train_batches(1), strict=True):
        changed = clean.words != noisy.words
        assert changed.any() or len(clean) < 4
        assert (noisy.words[changed] == UNK_ID).all()
        assert not changed[~clean.mask].any()  # padding untouched
        assert torch.equal(clean.chars, noisy.chars)  # characters still tell the word


def test_frequency_word_dropout_follows_alpha_over_alpha_plus_count() -> None:
    task = fixture_task(word_dropout_alpha=0.25)
    counts = Counter(
        task.vocab.normalize(w) for s in read_conllu(FIXTURE / "train.conllu") for w in s.words
    )
    probability = task.drop_probability
    assert probability[0] == 0 and probability[UNK_ID] == 0  # padding and <unk>
    for word, count in counts.items():
        expected = 0.25 / (0.25 + count)
        assert probability[task.vocab.words.encode([word])[0]].item() == pytest.approx(expected)
    # with uniform dropout too, a word is kept only if neither drops it
    both = fixture_task(word_dropout=0.5, word_dropout_alpha=0.25)
    assert torch.allclose(both.drop_probability[2:], 1 - 0.5 * (1 - probability[2:]))


def test_frequency_word_dropout_drops_rare_words_more_often() -> None:
    task = fixture_task(batch_size=4, word_dropout_alpha=1.0)
    clean = fixture_task(batch_size=4)
    counts = torch.zeros(len(task.vocab.words))
    dropped = torch.zeros(len(task.vocab.words))
    for epoch in range(300):
        for plain, noisy in zip(clean.train_batches(epoch), task.train_batches(epoch), strict=True):
            real = plain.mask
            counts += torch.bincount(plain.words[real], minlength=counts.numel())
            hit = plain.words[real & (noisy.words != plain.words)]
            dropped += torch.bincount(hit, minlength=counts.numel())
    rate = dropped / counts.clamp(min=1)
    seen = counts > 0
    expected = task.drop_probability[seen]
    assert torch.allclose(rate[seen], expected, atol=0.08)
    assert rate[seen].max() > 2 * rate[seen].min()  # rare words go far more often


def test_label_smoothing_changes_the_training_loss_only() -> None:
    plain, smooth = fixture_task(), fixture_task(label_smoothing=0.2)
    batch = next(plain.eval_batches("val"))
    logits = torch.randn(*batch.words.shape, len(plain.vocab.tags))
    output = TaggerOutput(logits)
    assert smooth.loss(output, batch) != pytest.approx(plain.loss(output, batch).item())
    meters = [task.new_meter("val") for task in (plain, smooth)]
    for meter in meters:
        meter.update(output, batch)
    assert meters[0].compute()["loss"] == pytest.approx(meters[1].compute()["loss"])


@pytest.mark.parametrize(("key", "value"), [("word_dropout_alpha", -0.1), ("label_smoothing", 1.0)])
def test_bad_regulariser_settings_are_config_errors(key: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"task.{key}"):
        fixture_task(**{key: value})


def test_tags_only_in_valid_or_test_become_classes(tmp_path: Path) -> None:
    train = (FIXTURE / "train.conllu").read_text()
    (tmp_path / "train.conllu").write_text(train)
    (tmp_path / "dev.conllu").write_text(train)
    (tmp_path / "test.conllu").write_text(
        _line("1", "Wow", "wow", "INTJ", "UH", "_", "0", "root", "_", "_")
    )
    task = TaggingTask(plain_files_config(tmp_path), seed=0)
    assert task.vocab.tags.words[-1] == "INTJ" and task.spec.output_size == 8


# -- the model ------------------------------------------------------------------------------


def small_tagger(method: str | None, char_encoder: str) -> BiLSTMTagger:
    torch.manual_seed(0)
    chars = {
        "none": None,
        "lstm": CharLSTMEncoder(30, 4, 3),
        "cnn": CharCNNEncoder(30, 4, 6, 3),
    }[char_encoder]
    attention = None if method is None else make_attention(method, 10, 10)
    return BiLSTMTagger(20, 5, 6, chars, 5, 2, True, 0.3, attention).eval()


@pytest.mark.parametrize("char_encoder", ["none", "lstm", "cnn"])
@pytest.mark.parametrize("method", [None, *METHODS])
def test_a_sentence_gets_the_same_tags_alone_as_in_a_padded_batch(
    method: str | None, char_encoder: str
) -> None:
    model = small_tagger(method, char_encoder)
    generator = torch.Generator().manual_seed(1)
    sentences = []
    for length in (4, 7, 2):
        word_lengths = torch.randint(1, 6, (length,), generator=generator)
        chars = torch.zeros(length, 5, dtype=torch.long)
        for i, n in enumerate(word_lengths.tolist()):
            chars[i, :n] = torch.randint(2, 30, (n,), generator=generator)
        words = torch.randint(1, 20, (length,), generator=generator)
        sentences.append((words, chars, word_lengths))

    def run(group: list) -> torch.Tensor:
        steps = max(len(w) for w, _, _ in group)
        words = torch.zeros(len(group), steps, dtype=torch.long)
        chars = torch.zeros(len(group), steps, 5, dtype=torch.long)
        char_lengths = torch.zeros(len(group), steps, dtype=torch.long)
        for row, (w, c, n) in enumerate(group):
            words[row, : len(w)], chars[row, : len(w)], char_lengths[row, : len(w)] = w, c, n
        lengths = torch.tensor([len(w) for w, _, _ in group])
        with torch.no_grad():
            return model(words, chars, char_lengths, lengths).logits

    batched = run(sentences)
    for row, sentence in enumerate(sentences):
        alone = run([sentence])[0]
        torch.testing.assert_close(batched[row, : len(sentence[0])], alone, rtol=1e-5, atol=1e-6)


def test_char_cnn_features_do_not_depend_on_the_padded_width() -> None:
    torch.manual_seed(0)
    encoder = CharCNNEncoder(10, 4, 6, 3)
    word = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[3, 4, 5, 0, 0, 0]])
    torch.testing.assert_close(encoder(word, torch.tensor([3])), encoder(padded, torch.tensor([3])))


def random_words(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Character ids (N, max length) padded with 0, and the lengths (N,)."""
    generator = torch.Generator().manual_seed(seed)
    chars = torch.zeros(len(lengths), max(lengths), dtype=torch.long)
    for row, n in enumerate(lengths):
        chars[row, :n] = torch.randint(1, 30, (n,), generator=generator)
    return chars, torch.tensor(lengths)


def test_char_lstm_buckets_give_the_states_of_one_padded_batch() -> None:
    """Words of every bucket (1 to 3 * the last bound characters), in mixed order: the bucketed
    encoder equals the masked BiLSTM run once over the whole batch."""
    torch.manual_seed(0)
    encoder = CharLSTMEncoder(30, 4, 3).eval()
    longest = 3 * CHAR_LENGTH_BUCKETS[-1]
    lengths = torch.randperm(longest, generator=torch.Generator().manual_seed(1)) + 1
    chars, lengths = random_words(lengths.tolist())
    with torch.no_grad():
        bucketed = encoder(chars, lengths)
        whole = encoder.lstm(encoder.embedding(chars), lengths)[1]
    assert bucketed.shape == (longest, 6)
    torch.testing.assert_close(bucketed, whole, rtol=1e-5, atol=1e-6)
    # and a word's features do not depend on what else is in the batch
    with torch.no_grad():
        alone = encoder(chars[:1, : int(lengths[0])], lengths[:1])
    torch.testing.assert_close(bucketed[:1], alone, rtol=1e-5, atol=1e-6)


def test_distinct_forms_give_the_scores_of_encoding_every_word() -> None:
    """The tagger encodes each distinct form of a batch once; the scores are those of
    encoding every word (repeated words included) one by one."""
    model = small_tagger("general", "lstm")
    chars, char_lengths = random_words([3, 5, 3, 1, 5, 2], seed=3)
    chars[2], chars[4] = chars[0], chars[1]  # "a b a c b d": two forms repeated
    char_lengths[2], char_lengths[4] = char_lengths[0], char_lengths[1]
    words = torch.tensor([[4, 5, 4, 6, 5, 7], [8, 4, 5, 0, 0, 0]])
    batch_chars = torch.zeros(2, 6, 5, dtype=torch.long)
    batch_chars[0] = chars
    batch_chars[1, :3] = chars[[5, 0, 1]]
    batch_lengths = torch.stack(
        [char_lengths, torch.cat([char_lengths[[5, 0, 1]], torch.zeros(3, dtype=torch.long)])]
    )
    lengths = torch.tensor([6, 3])
    with torch.no_grad():
        distinct = model(words, batch_chars, batch_lengths, lengths).logits
        model.encode_distinct_forms = False
        every = model(words, batch_chars, batch_lengths, lengths).logits
    mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3])
    torch.testing.assert_close(distinct[mask], every[mask], rtol=1e-5, atol=1e-6)


def test_distinct_rows_encode_each_word_form_once() -> None:
    chars, _ = random_words([3, 5, 1], seed=2)
    repeated = torch.cat([chars, chars[[1, 0, 1]]])  # 6 words, 3 forms
    repeated = torch.nn.functional.pad(repeated, (0, 4))  # a batch padded wider than its words
    unique, unique_lengths, inverse = distinct_rows(repeated)
    assert unique.shape == (3, 5)  # padding beyond the longest word dropped
    torch.testing.assert_close(unique[inverse], repeated[:, :5])
    assert sorted(unique_lengths.tolist()) == [1, 3, 5]


def test_self_attention_lets_a_word_see_the_whole_sentence() -> None:
    """Change the last word: with attention the first word's tag scores change even in a
    one-directional tagger (its LSTM state cannot see the future)."""
    torch.manual_seed(0)
    words = torch.tensor([[3, 4, 5, 6]])
    chars = torch.zeros(1, 4, 1, dtype=torch.long)
    char_lengths, lengths = torch.ones(1, 4, dtype=torch.long), torch.tensor([4])
    changed = words.clone()
    changed[0, 3] = 7
    for method, sees_future in ((None, False), ("general", True)):
        attention = None if method is None else make_attention(method, 6, 6)
        model = BiLSTMTagger(10, 3, 4, None, 6, 1, False, 0.0, attention).eval()
        with torch.no_grad():
            before = model(words, chars, char_lengths, lengths).logits[0, 0]
            after = model(changed, chars, char_lengths, lengths).logits[0, 0]
        assert (not torch.allclose(before, after)) == sees_future


def test_the_tagger_refuses_other_tasks_and_other_models_refuse_tagging() -> None:
    task = fixture_task()
    lm_cfg = compose_config(["task=lm_ptb", "model=lm"])
    with pytest.raises(ConfigError, match="a tag for every word"):
        build_model(lm_cfg.model, lm_cfg.attention, task.spec)
    cfg = compose_config(["model=tagger", "model.char_encoder=cnn", "model.char_kernel_size=4"])
    with pytest.raises(ConfigError, match="char_kernel_size=4 is not allowed: it must be odd"):
        build_model(cfg.model, cfg.attention, task.spec)


# -- the auxiliary tag column ---------------------------------------------------------------


def test_reader_reads_a_second_tag_column_and_requires_it(tmp_path: Path) -> None:
    sentences = read_conllu(FIXTURE / "train.conllu", "upos", "xpos")
    assert sentences[1].tags == ("PRON", "AUX", "PART", "VERB", "PUNCT")
    assert sentences[1].aux_tags == ("PRP", "VBP", "RB", "VB", ".")
    assert read_conllu(FIXTURE / "train.conllu")[1].aux_tags is None
    swapped = read_conllu(FIXTURE / "train.conllu", "xpos", "upos")[0]
    assert swapped.tags[:2] == ("DT", "NN") and swapped.aux_tags[:2] == ("DET", "NOUN")
    bad = tmp_path / "bad.conllu"
    bad.write_text("1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_\n")
    assert read_conllu(bad)[0].tags == ("INTJ",)  # XPOS not asked for: not needed
    with pytest.raises(ConlluError, match=r"bad.conllu:1: word 'Hi' has no XPOS tag"):
        read_conllu(bad, "upos", "xpos")
    with pytest.raises(ValueError, match="aux_column"):
        read_conllu(bad, "upos", "upos")


def test_aux_tags_reach_the_batches_the_model_the_loss_and_the_metrics() -> None:
    task = fixture_task(aux_tag_column="xpos")
    assert task.spec.aux_output_size == len(task.vocab.aux_tags)
    assert {"DT", "NN", "VBD", "PRP"} <= set(task.vocab.aux_tags.words)
    batch = next(task.train_batches(1))
    assert batch.aux_targets is not None and batch.aux_targets.shape == batch.targets.shape
    assert torch.equal(batch.aux_targets == IGNORE, batch.targets == IGNORE)  # same padding
    cfg = compose_config(["model=tagger", "model.hidden_size=8", "model.dropout=0"])
    torch.manual_seed(0)
    model = build_model(cfg.model, cfg.attention, task.spec).eval()
    output = task.forward(model, batch)
    assert output.aux_logits.shape == (*batch.targets.shape, task.spec.aux_output_size)
    main_only = torch.nn.functional.cross_entropy(
        output.logits.flatten(0, 1), batch.targets.flatten()
    )
    aux_only = torch.nn.functional.cross_entropy(
        output.aux_logits.flatten(0, 1), batch.aux_targets.flatten()
    )
    torch.testing.assert_close(task.loss(output, batch), main_only + aux_only)
    half = fixture_task(aux_tag_column="xpos", aux_weight=0.5)
    torch.testing.assert_close(half.loss(output, batch), main_only + 0.5 * aux_only)
    meter = task.new_meter("val")
    with torch.no_grad():
        for eval_batch in task.eval_batches("val"):
            meter.update(task.forward(model, eval_batch), eval_batch)
    metrics = meter.compute()
    assert 0.0 <= metrics["aux_acc"] <= 1.0
    plain = fixture_task()
    assert plain.spec.aux_output_size == 0 and next(plain.train_batches(1)).aux_targets is None
    assert build_model(cfg.model, cfg.attention, plain.spec).aux_classifier is None


def test_aux_tag_settings_that_make_no_sense_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="aux_tag_column=upos is not allowed: it is the target"):
        fixture_task(aux_tag_column="upos")
    with pytest.raises(ConfigError, match="aux_weight=-1 is not allowed: it must be >= 0"):
        fixture_task(aux_tag_column="xpos", aux_weight=-1.0)
    toy = compose_config(["task=pos_toy", "task.aux_tag_column=xpos"])
    with pytest.raises(ConfigError, match="pos_toy has one tag column"):
        build_task(toy.task, 0, None)


@pytest.mark.slow
def test_aux_tags_train_and_tag_from_the_checkpoint(tmp_path: Path) -> None:
    run_cli([*POS_TINY, "task.aux_tag_column=xpos"], tmp_path)
    run_dir = only_run_dir(tmp_path / "outputs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert "val/aux_acc" in metrics["history"][-1] and "test/aux_acc" in metrics["test"]
    tag_command = [sys.executable, "-m", "attnlstm.cli.tag"]
    result = subprocess.run(
        [*tag_command, str(run_dir), "The dog read ."],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    tags = [pair.rsplit("/", 1)[1] for pair in result.stdout.split()]
    assert len(tags) == 4 and set(tags) <= set(build_task_tags())  # UPOS, the target


# -- end to end -----------------------------------------------------------------------------


def test_pos_toy_learns_the_tutorial_sentences(tmp_path: Path) -> None:
    args = [
        "task=pos_toy",
        "model=tagger",
        "optim.lr=0.05",
        "trainer.max_epochs=40",
        "trainer.progress_bar=false",
        "device=cpu",
    ]
    run_cli(args, tmp_path)
    metrics = json.loads((only_run_dir(tmp_path / "outputs") / "metrics.json").read_text())
    assert metrics["test"]["test/acc"] == 1.0
    assert {"test/acc_DET", "test/acc_NN", "test/acc_V"} <= set(metrics["test"])


@pytest.mark.parametrize(
    "attention",
    [
        pytest.param("none", marks=pytest.mark.slow),
        pytest.param("general", marks=pytest.mark.slow),
        pytest.param("feedforward", marks=pytest.mark.slow),
    ],
)
def test_train_resume_and_tag_from_a_checkpoint(attention: str, tmp_path: Path) -> None:
    run_cli([*POS_TINY, f"attention={attention}"], tmp_path)
    run_dir = only_run_dir(tmp_path / "outputs")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    assert {"val/acc", "val/unseen_acc", "perf/words_per_s"} <= set(metrics["history"][0])
    images = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    images.Reload()
    # the self-attention of a validation sentence, word by word, as an image in TensorBoard
    assert ("val/attention" in images.Tags()["images"]) == (attention != "none")
    assert metrics["test"]["test/unseen_words"] == 2.0  # "Cats" and "ca" are not in train
    run_cli([f"resume={run_dir}", "trainer.max_epochs=3"], tmp_path)
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 3

    tag_command = [sys.executable, "-m", "attnlstm.cli.tag"]
    result = subprocess.run(
        [*tag_command, str(run_dir), "The dog read .", "I know"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    lines = result.stdout.splitlines()
    assert len(lines) == 2 and lines[0].split()[0].startswith("The/")
    tags = [pair.rsplit("/", 1)[1] for line in lines for pair in line.split()]
    assert len(tags) == 6 and set(tags) <= set(build_task_tags())
    missing = subprocess.run(
        [*tag_command, str(tmp_path / "nowhere"), "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and "no checkpoint" in missing.stderr


def build_task_tags() -> list[str]:
    return fixture_task().vocab.tags.words


def fixture_as_ewt(root: Path) -> Path:
    """The fixture treebank under EWT's file names in ``root/ud-english-ewt``; returns root."""
    folder = root / "ud-english-ewt"
    folder.mkdir(parents=True)
    for source, split in (("train", "train"), ("dev", "dev"), ("test", "test")):
        (folder / f"en_ewt-ud-{split}.conllu").write_text(
            (FIXTURE / f"{source}.conllu").read_text()
        )
    return root


def test_the_ewt_preset_runs_end_to_end(tmp_path: Path) -> None:
    """``experiment=pos_ewt`` (shrunk) on the fixture treebank standing in for EWT."""
    fixture_as_ewt(tmp_path / "data")
    args = [
        "experiment=pos_ewt",
        "attention=additive",
        f"data_dir={tmp_path / 'data'}",
        "model.word_embedding_size=8",
        "model.char_hidden_size=4",
        "model.hidden_size=8",
        "trainer.max_epochs=2",
        "trainer.progress_bar=false",
        "device=cpu",
    ]
    run_cli(args, tmp_path / "run")
    metrics = json.loads((only_run_dir(tmp_path / "run" / "outputs") / "metrics.json").read_text())
    assert metrics["status"] == "completed" and metrics["epochs"] == 2
    assert 0.0 <= metrics["test"]["test/acc"] <= 1.0


def test_bench_tagger_compares_the_char_paths(tmp_path: Path) -> None:
    script = Path(__file__).parents[1] / "scripts" / "bench_tagger.py"
    data = fixture_as_ewt(tmp_path / "data")
    result = subprocess.run(
        [
            sys.executable,
            str(script),
            "--updates=2",
            "--rounds=1",
            "--threads=1",
            "--busy=0",  # idle only: tests/test_bench_scripts.py runs it beside a neighbour
            f"--data-dir={data}",
            "task.batch_size=1",
            "model.hidden_size=8",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert re.search(r"\(a\)/\(b\) = [0-9.]+$", result.stdout, re.M)
    assert re.search(r"\(a\)/\(c\) = [0-9.]+$", result.stdout, re.M)
    assert len(re.findall(r"\d words/s$", result.stdout, re.M)) == 3


# -- ensembles ------------------------------------------------------------------------------


def test_ensemble_scores_are_the_log_of_the_mean_probability() -> None:
    from attnlstm.models.ensemble import TaggerEnsemble, mean_probability_scores

    first, second = torch.randn(2, 3, 5), torch.randn(2, 3, 5)
    scores = mean_probability_scores([first, second])
    expected = ((first.softmax(-1) + second.softmax(-1)) / 2).log()
    torch.testing.assert_close(scores, expected)
    torch.testing.assert_close(scores.softmax(-1), expected.exp())  # a distribution already
    torch.testing.assert_close(mean_probability_scores([first]), first.log_softmax(-1))

    torch.manual_seed(0)
    taggers = [small_tagger(None, "lstm"), small_tagger("dot", "cnn")]
    words = torch.tensor([[3, 4, 5], [6, 7, 0]])
    chars = torch.randint(1, 30, (2, 3, 4))
    char_lengths, lengths = torch.full((2, 3), 4), torch.tensor([3, 2])
    with torch.no_grad():
        output = TaggerEnsemble(taggers).eval()(words, chars, char_lengths, lengths)
        members = [t(words, chars, char_lengths, lengths).logits for t in taggers]
    torch.testing.assert_close(output.logits, mean_probability_scores(members))
    assert output.aux_logits is None and output.attention is None

    # auxiliary heads of other sizes (other tag columns) cannot be averaged: dropped
    from attnlstm.models.tagger import TaggerOutput

    class Fixed(torch.nn.Module):
        def __init__(self, aux_tags: int) -> None:
            super().__init__()
            self.aux_tags = aux_tags

        def forward(self, words: torch.Tensor) -> TaggerOutput:
            return TaggerOutput(torch.zeros(1, 2, 3), None, torch.zeros(1, 2, self.aux_tags))

    mixed = TaggerEnsemble([Fixed(4), Fixed(5)])(words)
    assert mixed.aux_logits is None and mixed.logits.shape == (1, 2, 3)
    same = TaggerEnsemble([Fixed(4), Fixed(4)])(words)
    assert same.aux_logits is not None and same.aux_logits.shape == (1, 2, 4)


@pytest.mark.slow  # three tagger runs; the ensemble's maths is tested without training
def test_evaluate_and_tag_with_an_ensemble_of_runs(tmp_path: Path) -> None:
    for name, extra in (("a", "seed=0"), ("b", "task.aux_tag_column=xpos")):
        # b: another seed's draws (the auxiliary head's) and an auxiliary head to ignore
        run_cli([*POS_TINY, extra, "trainer.attention_images=0"], tmp_path / name)
    first, second = (only_run_dir(tmp_path / n / "outputs") for n in "ab")

    def command(name: str, *args: object) -> subprocess.CompletedProcess[str]:
        """``attnlstm-<name> <args>`` (``python -m attnlstm.cli.<name>``)."""
        return subprocess.run(
            [sys.executable, "-m", f"attnlstm.cli.{name}", *map(str, args)],
            capture_output=True,
            text=True,
            timeout=120,
        )

    alone = json.loads(command("evaluate", first).stdout)["metrics"]
    result = command("evaluate", first, second, "--out", tmp_path / "ensemble.json")
    assert result.returncode == 0, result.stderr
    ensemble = json.loads((tmp_path / "ensemble.json").read_text())
    assert len(ensemble["checkpoint"]) == 2
    assert {"acc", "unseen_acc", "acc_NOUN"} <= set(ensemble["metrics"])
    assert ensemble["metrics"]["loss"] != alone["loss"]  # two models' probabilities, not one
    tagged = command("tag", first, "--also", second, "The dog read .")
    assert tagged.returncode == 0, tagged.stderr
    assert [pair.rsplit("/", 1)[0] for pair in tagged.stdout.split()] == ["The", "dog", "read", "."]

    run_cli([*POS_TINY, "task.lowercase=true"], tmp_path / "c")  # another vocabulary
    third = only_run_dir(tmp_path / "c" / "outputs")
    refused = command("evaluate", first, third)
    assert refused.returncode == 2 and "another vocabulary" in refused.stderr
    refused = command("tag", first, "--also", third, "The dog")
    assert refused.returncode == 2 and "another vocabulary" in refused.stderr
