"""Shared fixtures for the tokenizer tests: a corpus every Python has (the standard
library's pydoc help topics) and a BPE tokenizer trained on part of it once."""

import pytest
from pydoc_data.topics import topics

from tinyllm.tokenizer import BPETokenizer


@pytest.fixture(scope="session")
def corpus_text() -> str:
    """About 200 kB of English help text with code, punctuation and whitespace runs."""
    return "\n\n".join(topics[name] for name in sorted(topics))[:200_000]


@pytest.fixture(scope="session")
def trained_bpe(corpus_text) -> BPETokenizer:
    return BPETokenizer.train(corpus_text[:60_000], vocab_size=600, pattern="gpt4",
                              special_tokens=["<|endoftext|>", "<|pad|>"], progress=False)
