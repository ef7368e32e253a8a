"""The worked examples in the tokenizer's docstrings run and give what they say."""

import doctest
import importlib

import pytest

MODULES = ["base", "bpe", "bpe_train", "char", "files", "lines", "patterns", "rank_merge", "shards", "textstream"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"tinyllm.tokenizer.{name}")
    failures, attempted = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert failures == 0 and attempted > 0
