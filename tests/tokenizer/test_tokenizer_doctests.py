"""The worked examples in the tokenizer's docstrings run and give what they say."""

import doctest
import importlib

import pytest

from tinyllm.tokenizer.fastsplit import STDLIB_POSSESSIVE

MODULES = ["base", "bpe", "bpe_train", "char", "cuts", "fastsplit", "files", "lines", "openai_files", "patterns",
           "prepare", "rank_merge", "shards", "textstream", "workers"]
# The stdlib fast paths exist from Python 3.11 (fastsplit.STDLIB_POSSESSIVE); on 3.10 their examples
# are left out, and tests/tokenizer/test_tokenizer_patterns.py checks that they are absent.
FAST_PATHS = {"tinyllm.tokenizer.fastsplit.ascii_split_pattern"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"tinyllm.tokenizer.{name}")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    for test in doctest.DocTestFinder().find(module):
        if STDLIB_POSSESSIVE or test.name not in FAST_PATHS:
            runner.run(test)
    failures, attempted = runner.summarize(verbose=False)
    assert failures == 0 and attempted > 0
