"""Hugging Face directories that would have been read wrongly.

Integer weights were cast silently (an int32 bias loaded as whatever numbers the cast made), and
a `model.safetensors.index.json` naming a shard `../../../etc/hostname` was opened outside the
directory. Both are now one line naming the file and the tensor or shard.
"""
import json
import shutil

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from .bounded import assert_one_line_error
from tinyllm import GPT, GPTConfig
from tinyllm.cli import main
from tinyllm.pretrained import PretrainedFormatError
from tinyllm.tokenizer import BPETokenizer

CONFIG = GPTConfig(vocab_size=256, block_size=16, n_layer=1, n_head=2, n_embd=16)


@pytest.fixture
def hf(tmp_path):
    GPT(CONFIG, seed=0).save_pretrained(tmp_path / "hf")
    return tmp_path / "hf"


def test_integer_weights_are_refused_naming_the_tensor(hf, tmp_path, capsys):
    tensors = load_file(hf / "model.safetensors")
    name = sorted(tensors)[0]
    tensors[name] = (tensors[name] * 100).astype(np.int32)
    save_file(tensors, hf / "model.safetensors")
    with pytest.raises(PretrainedFormatError, match=rf"model\.safetensors: tensor '{name}' is stored as I32; model "
                                                    r"weights are floating point"):
        GPT.from_pretrained(hf)
    tokenizer = tmp_path / "bytes.tok"
    BPETokenizer({bytes([b]): b for b in range(256)}, "gpt2").save(tokenizer)
    records = tmp_path / "r.jsonl"
    records.write_text("".join(json.dumps({"text": f"text {i}", "label": str(i % 2)}) + "\n" for i in range(8)))
    code = main(["finetune", "--task", "classify", "--init-from", str(hf), "--data", str(records), "--out",
                 str(tmp_path / "run"), "--tokenizer", str(tokenizer)])
    assert_one_line_error(code, capsys.readouterr().err, "finetune", f"tensor '{name}' is stored as I32")


def test_an_index_cannot_name_a_shard_outside_the_directory(hf, tmp_path):
    secret = tmp_path / "secret.safetensors"
    shutil.move(hf / "model.safetensors", secret)
    names = list(load_file(secret))
    for shard in ("../secret.safetensors", str(secret), "sub/../../secret.safetensors"):
        (hf / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {n: shard for n in names}}))
        with pytest.raises(PretrainedFormatError, match=r"model\.safetensors\.index\.json: shard .* is not a file "
                                                        r"name in .*; the index is corrupted or was crafted"):
            GPT.from_pretrained(hf)
