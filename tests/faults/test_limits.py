"""A model's size from its config alone (GPT.count_parameters, the model built on the "meta" device),
and the memory check of tinyllm/limits.py built on it."""
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from .bounded import REPO
from tinyllm import GPT, GPTConfig
from tinyllm.limits import LimitError, check_model_fits


@given(norm=st.sampled_from(["layernorm", "rmsnorm"]), mlp=st.sampled_from(["gelu", "swiglu"]),
       position=st.sampled_from(["learned", "rope"]), bias=st.booleans(), tie=st.booleans(),
       heads=st.sampled_from([(2, None), (2, 1), (4, 2)]), n_layer=st.integers(1, 2), vocab=st.integers(1, 40))
def test_parameter_count_is_the_models(norm, mlp, position, bias, tie, heads, n_layer, vocab):
    config = GPTConfig(vocab_size=vocab, block_size=8, n_layer=n_layer, n_head=heads[0], n_kv_head=heads[1],
                       n_embd=16, norm=norm, mlp=mlp, position=position, bias=bias, tie_embeddings=tie)
    assert GPT.count_parameters(config) == GPT(config).num_parameters()


def test_a_model_too_big_for_the_memory_left_is_refused_naming_the_source():
    huge = GPTConfig(vocab_size=2 ** 24, block_size=16, n_layer=1, n_head=2, n_embd=4096)   # 69 billion bytes
    with pytest.raises(LimitError, match=r"^tokens\.tok: the model it describes has 68,[\d,]+ parameters"):
        check_model_fits(GPT.count_parameters(huge), "float32", copies=4, source="tokens.tok")
    small = GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=2, n_embd=16)
    assert check_model_fits(GPT.count_parameters(small), "float64", copies=4, source="small") > 0


def test_the_address_space_limit_counts_as_memory():
    code = ("import resource; from tinyllm.limits import available_memory; "
            "resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30)); print(available_memory())")
    left = int(subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True,
                              timeout=60, check=True).stdout)
    assert 0 < left < 1 << 30          # what the cap leaves after the interpreter and numpy


def test_training_counts_the_four_copies_of_the_weights_it_needs(tmp_path, corpus, monkeypatch):
    """Weights, gradients and AdamW's two moments: a model whose weights fit 2.5 times in the memory
    left is refused for training (issue 23: a check counting one copy let a 124M model start with
    1 GiB free, then run out of memory), and accepted with room for 4."""
    from tinyllm import limits
    from tinyllm.build import build_run
    from tinyllm.settings import RunSettings
    from tinyllm.train import Pretraining
    config = RunSettings.of(data=str(corpus), out=str(tmp_path / "run"), n_layer=2, n_head=4, n_embd=256,
                            block_size=16, progress="none", workers=1)
    one_copy = GPT.count_parameters(config.model.config(vocab_size=16)) * 4      # float32; the corpus has 16 characters
    monkeypatch.setattr(limits, "available_memory", lambda: int(one_copy * 2.5))
    with pytest.raises(LimitError, match=r"with the 4 copies this needs\), more than the"):
        build_run(config, Pretraining())
    monkeypatch.setattr(limits, "available_memory", lambda: int(one_copy * 4.5))
    assert build_run(config, Pretraining()).model.num_parameters() * 4 == one_copy
