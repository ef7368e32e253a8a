"""Fixtures for the finetuning tests: a tiny base checkpoint and generated datasets.

Base models are tiny GPTs with random weights saved as tinyllm checkpoints (the format
`tinyllm train` writes), with a character tokenizer that has an end-of-text token.
"""
import json

import numpy as np
import pytest

from tinyllm import GPT, GPTConfig
from tinyllm import checkpoint as ckpt
from tinyllm.tokenizer import EOT_TOKEN, CharTokenizer

ALPHABET = "abcdefghijklmnopqrstuvwxyz .,:;!?#\n0123456789-'ABCDEFGHIJKLMNOPQRSTUVWXYZ"
WORDS = ["the", "a", "movie", "was", "plot", "actor", "scene", "and", "very", "it", "film", "story"]


@pytest.fixture
def make_base(tmp_path):
    """make_base(name="base", dtype="float32", **config) -> directory of a saved random GPT."""
    def make(name="base", dtype="float32", seed=0, **overrides):
        tokenizer = CharTokenizer.train(ALPHABET, special_tokens=[EOT_TOKEN])
        fields = dict(vocab_size=tokenizer.vocab_size, block_size=48, n_layer=2, n_head=2, n_embd=32)
        fields.update(overrides)
        config = GPTConfig(**fields)
        model = GPT(config, seed=seed, dtype=dtype)
        directory = tmp_path / name
        ckpt.save_checkpoint(directory, model=model, tokenizer=tokenizer,
                             state={"step": 0, "model_config": config.to_dict(), "train_config": {"dtype": dtype}})
        return directory
    return make


def keyword_records(n=240, seed=0):
    """Texts of filler words with one keyword: 'great' -> pos, 'awful' -> neg (alternating)."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        words = list(rng.choice(WORDS, size=int(rng.integers(2, 6))))
        label = "pos" if i % 2 else "neg"
        words.insert(int(rng.integers(0, len(words) + 1)), "great" if label == "pos" else "awful")
        records.append({"text": " ".join(words), "label": label})
    return records


def copy_records(n=64, seed=0):
    """Alpaca records whose output repeats a word of the input in upper case."""
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n):
        word = "".join(rng.choice(list("abcdef"), size=3))
        if i % 3:
            records.append({"instruction": "shout", "input": word, "output": word.upper()})
        else:
            records.append({"instruction": f"shout {word}", "output": word.upper()})
    return records


@pytest.fixture
def write_jsonl(tmp_path):
    def write(records, name="data.jsonl"):
        path = tmp_path / name
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return path
    return write


@pytest.fixture
def records():
    """The record generators, for tests that edit records before writing them."""
    return {"keyword": keyword_records, "copy": copy_records}


@pytest.fixture
def keyword_data(write_jsonl):
    return write_jsonl(keyword_records(), "keywords.jsonl")


@pytest.fixture
def copy_data(write_jsonl):
    return write_jsonl(copy_records(), "shout.jsonl")
