"""Fuzzing the files tinyllm reads: every damaged file gives a working command or one line and exit 2.

Hypothesis damages a checkpoint's state.json, the JSON header of its model.safetensors (with
the file's record in state.json fixed, so the header itself is what gets read), tokenizer
files (in a checkpoint, and on their own for `tinyllm tokenizer encode` and `tinyllm train
--tokenizer`) and finetuning records (classification JSONL, instruction JSON): random bytes,
and valid JSON whose values have the wrong types (tests/faults/mutations.py). The real
commands (`info`, `sample`, `eval`, `tokenizer encode`, `train`, `finetune`) run on each
damaged file in a subprocess whose address space is capped at 1.5 GiB; every outcome must be
exit 0, or exit 2 with exactly one error line and no traceback (an internal error, a
MemoryError or a hang fails the test).

Cost: one subprocess per example runs all of its MUTATIONS damaged files (about 2-6 s), and
EXAMPLES examples per test (the "ci" profile is derandomized, so CI sees the same files every
run); about 10 s per test on 2 cores. TINYLLM_FUZZ_EXAMPLES=100 HYPOTHESIS_PROFILE=dev explores more.
"""
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from .bounded import assert_clean_outcome, corpus_text, make_base, rewrite_file, run_many
from .mutations import byte_mutation, json_mutation, line_mutation

EXAMPLES = int(os.environ.get("TINYLLM_FUZZ_EXAMPLES", 6))   # per test; each is one bounded subprocess
MUTATIONS = 5       # damaged files per example
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fuzz_root(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def fresh_dir(root) -> Path:
    return Path(tempfile.mkdtemp(dir=root))


def check_all(commands, work: Path) -> None:
    for result in run_many(commands, work):
        assert_clean_outcome(result)
    shutil.rmtree(work, ignore_errors=True)


def damaged_json(data, document) -> str:
    """Valid JSON with wrong values (mostly), or the document's text with its bytes damaged."""
    if data.draw(st.integers(0, 3)):
        return json.dumps(data.draw(json_mutation(document)))
    return data.draw(byte_mutation(json.dumps(document).encode())).decode("utf-8", errors="replace")


@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_damaged_state_json(data, trained, fuzz_root):
    source = (trained / "last").resolve()
    state = json.loads((source / "state.json").read_text())
    work, commands = fresh_dir(fuzz_root), []
    for i in range(MUTATIONS):
        target = work / f"ckpt{i}"
        shutil.copytree(source, target)
        (target / "state.json").write_text(damaged_json(data, state))
        commands += [["info", "--ckpt", target], ["sample", "--ckpt", target, "--max-new-tokens", "2"],
                     ["eval", "--ckpt", target, "--max-tokens", "40"]]
    check_all(commands, work)


@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_damaged_safetensors_header(data, trained, fuzz_root):
    source = (trained / "last").resolve()
    raw = (source / "model.safetensors").read_bytes()
    length = int.from_bytes(raw[:8], "little")
    header, payload = json.loads(raw[8:8 + length]), raw[8 + length:]
    work, commands = fresh_dir(fuzz_root), []
    for i in range(MUTATIONS):
        target = work / f"ckpt{i}"
        shutil.copytree(source, target)
        if data.draw(st.booleans()):
            text = json.dumps(data.draw(json_mutation(header))).encode()
        else:
            text = data.draw(byte_mutation(raw[8:8 + length]))
        declared = len(text) if data.draw(st.integers(0, 3)) else data.draw(st.sampled_from([0, 7, 2 ** 40, 2 ** 64 - 1]))
        rewrite_file(target, "model.safetensors", declared.to_bytes(8, "little") + text + payload)
        commands += [["info", "--ckpt", target], ["sample", "--ckpt", target, "--max-new-tokens", "2"]]
    check_all(commands, work)


@pytest.fixture(scope="module")
def bpe_file(fuzz_root):
    from tinyllm.tokenizer import BPETokenizer
    path = fuzz_root / "bpe.tok"
    BPETokenizer.train(corpus_text(40), vocab_size=270, pattern="gpt2", special_tokens=["<|endoftext|>"]).save(path)
    return path


@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_damaged_tokenizer_files(data, trained, corpus, bpe_file, fuzz_root):
    source = (trained / "last").resolve()
    char_text = (source / "tokenizer.json").read_text()
    bpe_text = bpe_file.read_text()
    work, commands = fresh_dir(fuzz_root), []
    for i in range(MUTATIONS):
        target = work / f"ckpt{i}"
        shutil.copytree(source, target)
        damaged = data.draw(line_mutation(char_text)).encode() if data.draw(st.integers(0, 2)) else \
            data.draw(byte_mutation(char_text.encode()))
        rewrite_file(target, "tokenizer.json", damaged)
        loose = work / f"tok{i}"
        loose.write_bytes(data.draw(line_mutation(bpe_text)).encode() if data.draw(st.integers(0, 2)) else
                          data.draw(byte_mutation(bpe_text.encode())))
        commands += [["sample", "--ckpt", target, "--max-new-tokens", "2"],
                     ["tokenizer", "encode", "--tokenizer", loose, "--data", corpus, "--out", work / f"shards{i}"],
                     ["train", "--tokenizer", loose, "--data", corpus, "--out", work / f"run{i}", "--n-layer", "1",
                      "--n-head", "1", "--n-embd", "8", "--block-size", "8", "--batch-size", "2", "--max-iters", "1",
                      "--eval-iters", "1", "--warmup-iters", "0", "--progress", "none", "--sample-tokens", "0"]]
    check_all(commands, work)


def classify_records(n=16):
    return [{"text": f"the film number {i} was {'great' if i % 2 else 'awful'}", "label": "pos" if i % 2 else "neg"}
            for i in range(n)]


def instruct_records(n=12):
    return [{"instruction": f"repeat {i}", "input": "abc" if i % 2 else "", "output": f"{i} {i}"} for i in range(n)]


FINETUNE = ["--max-iters", "1", "--eval-iters", "1", "--batch-size", "2", "--progress", "none"]


@settings(max_examples=EXAMPLES)
@given(data=st.data())
def test_damaged_finetuning_records(data, fuzz_root):
    work, commands = fresh_dir(fuzz_root), []
    base = make_base(work)
    for i in range(MUTATIONS):
        jsonl = work / f"classify{i}.jsonl"
        if data.draw(st.integers(0, 3)):
            records = data.draw(json_mutation(classify_records()))
            jsonl.write_text("".join(json.dumps(r) + "\n" for r in records))
        else:
            jsonl.write_bytes(data.draw(byte_mutation("".join(json.dumps(r) + "\n" for r in classify_records())
                                                      .encode())))
        alpaca = work / f"instruct{i}.json"
        alpaca.write_text(damaged_json(data, instruct_records()))
        commands += [["finetune", "--task", "classify", "--init-from", base, "--data", jsonl,
                      "--out", work / f"clf{i}", *FINETUNE],
                     ["finetune", "--task", "instruct", "--init-from", base, "--data", alpaca,
                      "--out", work / f"ins{i}", *FINETUNE]]
    check_all(commands, work)
