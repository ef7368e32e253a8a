"""Files and flags that would make tinyllm allocate more than this machine has: refused first, in one line.

Someone else's file decides sizes: a checkpoint's tensors, a tokenizer's vocabulary, a corpus, a
Hugging Face header, a download that does not end. Each is checked before anything is read or
allocated (tinyllm/limits.py), in a subprocess whose address space is capped at 1.5 GiB
(tests/faults/bounded.py), so a bound that is missing shows as a MemoryError, not as a slow test.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .bounded import MEMORY_LIMIT, REPO, TINY, edit_state, last_dir, make_base
from tinyllm.tokenizer import BPETokenizer, TokenizerFileError


def test_a_huge_sparse_checkpoint_file_is_refused_before_it_is_read(trained, copy_of, tinyllm, one_line_error):
    run = copy_of(trained)
    model_file = last_dir(run) / "model.safetensors"    # errors name the checkpoint `last` named, not the link
    recorded = json.loads((run / "last" / "state.json").read_text())["files"]["model.safetensors"]["size"]
    os.truncate(model_file, 20 << 30)                      # 20 GB, sparse: costs no disk
    for command in ("info", "sample"):
        code, _, err = tinyllm(command, "--ckpt", run, *(["--max-new-tokens", "2"] if command == "sample" else []))
        one_line_error(code, err, command, f"{model_file}: truncated or altered: {20 << 30} bytes, "
                                           f"state.json says {recorded}")
    edit_state(run / "last", lambda s: s["files"]["model.safetensors"].__setitem__("size", 20 << 30))
    code, _, err = tinyllm("info", "--ckpt", run)   # the record agrees: refused for the memory it would take
    one_line_error(code, err, "info", f"{model_file}: {20 << 30:,} bytes, more than the", "of memory available here")


def write_tokenizer_with(tmp_path, extra_line: str) -> Path:
    """A valid BPE tokenizer file with one more token line (its count fixed)."""
    path = tmp_path / "bomb.tok"
    BPETokenizer({bytes([b]): b for b in range(256)}, "gpt2").save(path)
    lines = path.read_text().splitlines()
    count_at = next(i for i, line in enumerate(lines) if line.startswith("tokens "))
    lines[count_at] = f"tokens {int(lines[count_at].split()[1]) + 1}"
    path.write_text("\n".join(lines + [extra_line]) + "\n")
    return path


def test_a_tokenizer_cannot_declare_a_huge_vocabulary(tmp_path, corpus, tinyllm, one_line_error):
    bomb = write_tokenizer_with(tmp_path, "50000000 b'zz'")   # vocab 50,000,001: 11.9 GiB of embedding
    code, _, err = tinyllm("train", "--data", corpus, "--tokenizer", bomb, "--out", tmp_path / "run", *TINY,
                           "--max-iters", "2")
    one_line_error(code, err, "train", f"{bomb}, line 260: rank 50,000,000 is out of range", "2**24")
    big = write_tokenizer_with(tmp_path, "16000000 b'zz'")    # below 2**24, but 8 GiB to train in float32
    code, _, err = tinyllm("train", "--data", corpus, "--tokenizer", big, "--out", tmp_path / "run2", *TINY,
                           "--max-iters", "2")
    one_line_error(code, err, "train", f"--tokenizer {big} and the model flags: the model it describes has "
                                       "512,", "of memory available here")


def test_tiktoken_ranks_and_special_ids_are_bounded(tmp_path):
    import base64
    lines = [f"{base64.b64encode(bytes([b])).decode()} {b}" for b in range(256)]
    path = tmp_path / "big.tiktoken"
    path.write_text("\n".join(lines + [f"{base64.b64encode(b'zz').decode()} 4000000000"]) + "\n")
    with pytest.raises(TokenizerFileError, match=r"big\.tiktoken, line 257: rank 4,000,000,000 is out of range"):
        BPETokenizer.from_tiktoken(path, pattern="gpt2")
    plain = tmp_path / "plain.tok"
    BPETokenizer({bytes([b]): b for b in range(256)}, "gpt2").save(plain)
    text = plain.read_text().replace("\ntokens ", '\nspecial 1000000000000 "<|x|>"\ntokens ', 1)
    (tmp_path / "special.tok").write_text(text)
    from tinyllm.tokenizer import load_tokenizer
    with pytest.raises(TokenizerFileError, match="special token id 1,000,000,000,000 is out of range"):
        load_tokenizer(tmp_path / "special.tok")
    with pytest.raises(ValueError, match="out of range"):
        BPETokenizer({**{bytes([b]): b for b in range(256)}, b"zz": 2 ** 32}, "gpt2")


def test_sampling_a_huge_number_of_tokens_streams_without_preallocating(trained):
    """--max-new-tokens 5,000,000,000 used to allocate 37 GiB before the first token."""
    command = [sys.executable, "-c", "import resource, sys; resource.setrlimit(resource.RLIMIT_AS, "
               f"({MEMORY_LIMIT}, {MEMORY_LIMIT})); from tinyllm.cli import main; sys.exit(main(sys.argv[1:]))",
               "sample", "--ckpt", str(trained), "--max-new-tokens", "5000000000", "--temperature", "0"]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    try:
        first = proc.stdout.read(200)          # tokens stream out: the run is alive and within its memory
    finally:
        proc.kill()
        _, err = proc.communicate(timeout=60)
    assert len(first) == 200, err.decode(errors="replace")
    assert b"MemoryError" not in err and b"Traceback" not in err


def test_a_download_that_never_ends_reads_one_byte_past_the_known_size(tmp_path, tinyllm, one_line_error):
    code, _, err = tinyllm("data", "download", "tinyshakespeare", "--url", "file:///dev/zero", "--out",
                           tmp_path / "shakespeare.txt")
    one_line_error(code, err, "data", "has more than 1,115,394 bytes, expected 1,115,394")
    assert not (tmp_path / "shakespeare.txt").exists()


@pytest.mark.parametrize("what", ["corpus", "finetuning records", "settings file"])
def test_huge_input_files_are_refused_before_they_are_read(what, tmp_path, tinyllm, one_line_error):
    huge = tmp_path / {"corpus": "big.txt", "finetuning records": "big.jsonl", "settings file": "big.toml"}[what]
    with open(huge, "wb") as f:
        f.truncate(20 << 30)                                 # 20 GB, sparse
    argv, command, fragment = {
        # a corpus is streamed, whatever its size (tinyllm/data.py): these 20 GB of zeros are refused at
        # their first bytes, as binary data
        "corpus": (["train", "--data", huge, "--out", tmp_path / "run", *TINY], "train",
                   f"{huge}: binary data, or UTF-16 text without a byte-order mark (a NUL byte at byte 0)"),
        "finetuning records": (["finetune", "--task", "classify", "--init-from", make_base(tmp_path), "--data", huge,
                                "--out", tmp_path / "ft"], "finetune", f"{huge}: 21,474,836,480 bytes, which needs"),
        "settings file": (["train", "--config", huge, "--out", tmp_path / "run"], "train",
                          f"{huge}: 21,474,836,480 bytes, more than any settings file has"),
    }[what]
    code, _, err = tinyllm(*argv)
    one_line_error(code, err, command, fragment)


def test_a_hugging_face_weights_file_with_a_huge_header_is_one_line(tmp_path, tinyllm, one_line_error, write_records):
    from tinyllm import GPT, GPTConfig
    hf = tmp_path / "hf"
    GPT(GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=16)).save_pretrained(hf)
    weights = hf / "model.safetensors"
    with open(weights, "r+b") as f:
        f.write((10 << 30).to_bytes(8, "little"))      # a 10 GB header...
        f.truncate(20 << 30)                             # ...in a 20 GB sparse file
    data = write_records()
    code, _, err = tinyllm("finetune", "--task", "classify", "--init-from", hf, "--tokenizer", hf / "tok", "--data",
                           data, "--out", tmp_path / "ft", "--max-iters", "1", "--progress", "none")
    one_line_error(code, err, "finetune", f"--init-from {hf}", "a header of 10,737,418,240 bytes is more than "
                   "safetensors allows")
