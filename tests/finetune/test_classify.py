"""Classification finetuning: accuracy on a learnable dataset, pooling, splits, freezing,
exact resume, small checkpoints, and bad data named by file and record."""
import json

import numpy as np
import pytest

from tinyllm import GPT, GPTConfig
from tinyllm.finetune import (FinetuneConfig, FinetuneDataError, PaddedBatch, SequenceClassifier, Finetuning,
                              classify_texts, finetune, frozen_names, load_classification_data, load_finetuned,
                              pad_sequences, prepare_model, split_indices)
from tinyllm.build import build_run
from tinyllm.fields import ConfigError
from tinyllm.runlock import RunDirectoryError
from tinyllm.settings import RunSettings


def train_config(out, **changes):
    values = dict(out=str(out), max_iters=60, lr=3e-3, min_lr=1e-4, warmup_iters=5, batch_size=16, eval_interval=30,
                  eval_iters=4, log_interval=10, weight_decay=0.0, progress="none", seed=0)
    values.update(changes)
    return RunSettings.of(**values)


def test_keyword_classification_reaches_95_percent(make_base, keyword_data, tmp_path):
    base = make_base()
    config = FinetuneConfig(task="classify", init_from=str(base), data=str(keyword_data), val_fraction=0.1,
                            test_fraction=0.2)
    result = finetune(config, train_config(tmp_path / "run"))
    assert result.test["examples"] == 48
    assert result.test["accuracy"] >= 0.95, result.test
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert any("val_accuracy" in r for r in records) and any("test_accuracy" in r for r in records)
    assert all(r["train_loss"] > 0 for r in records if "train_loss" in r)

    # the saved checkpoint classifies new texts the same way
    finetuned = load_finetuned(tmp_path / "run")
    assert finetuned.label_names == ("neg", "pos")
    probs = classify_texts(finetuned, ["it was a great movie", "the plot was awful"])
    assert probs.shape == (2, 2) and np.allclose(probs.sum(axis=1), 1)
    assert list(probs.argmax(axis=1)) == [1, 0]


@pytest.mark.parametrize("pooling", ["last", "mean"])
def test_pooled_features_do_not_depend_on_padding(pooling):
    gpt = GPT(GPTConfig(vocab_size=20, block_size=12, n_layer=2, n_head=2, n_embd=8), seed=1, dtype="float64")
    model = SequenceClassifier(gpt, num_classes=3, pooling=pooling, seed=0)
    short, long = [3, 4, 5], [1, 2, 3, 4, 5, 6, 7, 8, 9]
    alone, _ = model(pad_sequences([short], pad_id=0))
    together, _ = model(pad_sequences([short, long], pad_id=0))
    other_pad, _ = model(pad_sequences([short, long], pad_id=19))
    np.testing.assert_allclose(together.data[0], alone.data[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(other_pad.data[0], alone.data[0], rtol=0, atol=1e-12)


def test_mean_and_last_pooling_pick_the_right_positions():
    gpt = GPT(GPTConfig(vocab_size=20, block_size=12, n_layer=1, n_head=2, n_embd=8), seed=1, dtype="float64")
    batch = PaddedBatch(np.array([[1, 2, 3, 0], [4, 5, 6, 7]]), np.array([3, 4]))
    x = gpt.embed(batch.ids)
    for block in gpt.blocks:
        x = block(x)
    hidden = gpt.norm_f(x).data                                           # (B, T, C)
    last = SequenceClassifier(gpt, 2, "last").features(batch).data
    mean = SequenceClassifier(gpt, 2, "mean").features(batch).data
    np.testing.assert_allclose(last, hidden[[0, 1], [2, 3]], atol=1e-14)
    np.testing.assert_allclose(mean[0], hidden[0, :3].mean(axis=0), atol=1e-14)
    np.testing.assert_allclose(mean[1], hidden[1].mean(axis=0), atol=1e-14)


def test_split_is_deterministic_and_partitions_the_examples():
    train, val, test = split_indices(50, 0.1, 0.2, seed=3)
    assert (len(train), len(val), len(test)) == (35, 5, 10)
    assert sorted(np.concatenate([train, val, test]).tolist()) == list(range(50))
    again = split_indices(50, 0.1, 0.2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((train, val, test), again))
    assert not np.array_equal(split_indices(50, 0.1, 0.2, seed=4)[1], val)
    with pytest.raises(ConfigError, match="leave some examples"):
        split_indices(10, 0.5, 0.5, seed=0)


def test_freeze_all_but_last_block_trains_only_the_top(make_base, keyword_data):
    gpt = GPT(GPTConfig(vocab_size=20, block_size=12, n_layer=3, n_head=2, n_embd=8), seed=0)
    names = frozen_names(gpt, "all-but-last:1")
    assert "wte.weight" in names and "blocks.1.mlp.c_fc.weight" in names
    assert not any(n.startswith(("blocks.2.", "norm_f.")) for n in names)
    config = FinetuneConfig(task="classify", init_from="unused", data="unused", freeze="all-but-last:1")
    model = prepare_model(gpt, config, num_classes=2)
    _, loss = model(pad_sequences([[1, 2, 3], [4, 5]], 0), np.array([0, 1]))
    loss.backward()
    got = {n for n, p in model.named_parameters() if p.grad is not None}
    assert got and all(n.startswith(("gpt.blocks.2.", "gpt.norm_f.", "classifier.")) for n in got)
    assert "classifier.weight" in got and "gpt.blocks.2.attn.c_attn.weight" in got
    with pytest.raises(ConfigError, match="names no parameter"):
        frozen_names(gpt, "wte,nothing")
    with pytest.raises(ConfigError, match="from 0 to n_layer=3"):
        frozen_names(gpt, "all-but-last:9")


def test_resume_is_exact_and_lora_checkpoints_are_small(make_base, keyword_data, tmp_path):
    base = make_base(dtype="float64")
    config = FinetuneConfig(task="classify", init_from=str(base), data=str(keyword_data), lora_rank=2,
                            lora_targets=("attn", "mlp"))
    settings = dict(max_iters=6, eval_interval=3, eval_iters=1, batch_size=8, dtype="float64")
    straight = finetune(config, train_config(tmp_path / "a", **settings))
    first = finetune(config, train_config(tmp_path / "b", **settings), stop_at=3)
    second = finetune(config, train_config(tmp_path / "b", resume=True, **settings))
    assert first.train_losses + second.train_losses == straight.train_losses
    a, b = load_finetuned(tmp_path / "a"), load_finetuned(tmp_path / "b")
    for (name, p), (_, q) in zip(a.model.named_parameters(), b.model.named_parameters()):
        assert np.array_equal(p.data, q.data), name
    saved = (tmp_path / "a" / "last" / "model.safetensors").stat().st_size
    base_size = (base / "last" / "model.safetensors").stat().st_size
    assert saved < base_size / 3  # adapters and head only
    assert (tmp_path / "a" / "adapter" / "adapter.safetensors").is_file()
    with pytest.raises(Exception, match="other finetuning settings"):
        build_run(train_config(tmp_path / "b", max_iters=9, dtype="float64", resume=True),
                  Finetuning(FinetuneConfig(task="classify", init_from=str(base), data=str(keyword_data), lora_rank=4,
                                            lora_targets=("attn", "mlp"))), log=lambda m: None)


def test_an_existing_run_is_not_overwritten(make_base, keyword_data, tmp_path):
    base = make_base()
    config = FinetuneConfig(task="classify", init_from=str(base), data=str(keyword_data), freeze="all")
    finetune(config, train_config(tmp_path / "run", max_iters=1, eval_interval=1))
    with pytest.raises(RunDirectoryError, match="--resume"):
        finetune(config, train_config(tmp_path / "run", max_iters=1))


# ---- bad data ------------------------------------------------------------------------------


def write(tmp_path, name, text):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name, text, message", [
    ("d.jsonl", '{"text": "ok", "label": "a"}\n{"label": "b"}\n', "record 2 has no 'text' field"),
    ("d.jsonl", '{"text": "ok", "label": "a"}\n{"text": "  ", "label": "b"}\n', "record 2: 'text' is empty"),
    ("d.jsonl", '{"text": "ok", "label": "a"}\n{"text": "x"}\n', "record 2 has no 'label' value"),
    ("d.jsonl", '{"text": "ok", "label": "a"}\n{"text": "x", "label": "b"\n', r"record 2 \(line 2\) is not valid JSON"),
    ("d.jsonl", '{"text": "ok", "label": "a"}\n["x", "b"]\n', "record 2 is a list"),
    ("d.csv", "text,label\nok,a\nfine,b,extra\n", "record 2 has 3 fields"),
    ("d.tsv", "text\tlabel\nok\ta\n\tb\n", "record 2: 'text' is empty"),
    ("d.json", '{"text": "ok"}', "not a list of records"),
    ("d.txt", "ok a\n", "unknown data format '.txt'"),
    ("d.jsonl", '{"text": "ok", "label": "a"}\n{"text": "yes", "label": "a"}\n', "at least two labels"),
])
def test_bad_classification_data_names_file_and_record(tmp_path, name, text, message):
    path = write(tmp_path, name, text)
    with pytest.raises(FinetuneDataError, match=message) as error:
        load_classification_data(path)
    assert str(path) in str(error.value)


def test_unknown_label_names_the_record(tmp_path):
    path = write(tmp_path, "d.csv", "text,label\nok,pos\nhm,neutral\n")
    with pytest.raises(FinetuneDataError, match=r"d.csv: record 2 has label 'neutral', which is not one of"):
        load_classification_data(path, label_names=("neg", "pos"))
    data = load_classification_data(path, label_names=("neutral", "pos"))
    assert data.labels.tolist() == [1, 0] and data.label_names == ("neutral", "pos")


def test_text_the_tokenizer_cannot_read_names_the_record(make_base, write_jsonl, records, tmp_path):
    rows = records["keyword"](20)
    rows[6]["text"] = "caf\u00e9 \u2603"
    path = write_jsonl(rows)
    config = FinetuneConfig(task="classify", init_from=str(make_base()), data=str(path))
    with pytest.raises(FinetuneDataError, match=r"data.jsonl: record 7: cannot tokenize"):
        build_run(train_config(tmp_path / "run"), Finetuning(config), log=lambda m: None)
