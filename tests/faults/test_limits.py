"""A model's size from its config alone (GPT.count_parameters, the model built on the "meta" device),
and the memory check of tinyllm/limits.py built on it."""
import subprocess
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bounded import REPO
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
