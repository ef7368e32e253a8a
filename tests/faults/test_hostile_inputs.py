"""Issue 14, items 3-6: memory bombs, tracebacks, wrong results reported as success, nonsense accepted.

Every case is what a hostile but realistic user (or a damaged file) does, run through the
real command line: the memory bombs in a subprocess whose address space is capped (1.5 GiB,
tests/faults/bounded.py), the rest in this process through `tinyllm.cli.main`. An error must
be one line naming the file or flag, exit status 2, no traceback.
"""
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_save

from bounded import MEMORY_LIMIT, REPO, TINY, assert_one_line_error
from tinyllm import checkpoint as ckpt
from tinyllm.cli import main
from tinyllm.tokenizer import BPETokenizer, TokenizerFileError


def cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def edit_state(checkpoint_dir: Path, change) -> None:
    """Apply change(state) to a checkpoint's state.json (the other files untouched)."""
    path = checkpoint_dir / "state.json"
    state = json.loads(path.read_text())
    change(state)
    path.write_text(json.dumps(state))


def last_dir(run: Path) -> Path:
    """The checkpoint directory run/last names (what errors name: the checkpoint read, not the link)."""
    return run / os.readlink(run / "last")


def rewrite_file(checkpoint_dir: Path, name: str, data: bytes) -> None:
    """Replace a checkpoint file and its record, so that only its content is wrong."""
    (checkpoint_dir / name).write_bytes(data)
    edit_state(checkpoint_dir, lambda s: s["files"].__setitem__(
        name, {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}))


# ---- item 3: memory bombs ------------------------------------------------------------------


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


# ---- item 4: tracebacks -> one line, exit 2 ------------------------------------------------


@pytest.mark.parametrize("case", ["small vocab", "invalid utf-8", "bad pattern", "duplicate special tokens",
                                  "out is a directory", "encode out is a file"])
def test_tokenizer_command_errors_are_one_line(case, tmp_path, capsys):
    text, bad = tmp_path / "text.txt", tmp_path / "latin1.txt"
    text.write_text("hello world " * 20)
    bad.write_bytes("caf\xe9 cr\xe8me".encode("latin-1"))
    (tmp_path / "a_file").write_text("x")
    argv, fragments = {
        "small vocab": (["train", "--data", text, "--vocab-size", "100", "--out", tmp_path / "t"],
                        ["--vocab-size 100 is too small"]),
        "invalid utf-8": (["train", "--data", bad, "--vocab-size", "300", "--out", tmp_path / "t"],
                          [f"{bad}: not valid UTF-8 near byte 3"]),
        "bad pattern": (["train", "--data", text, "--vocab-size", "300", "--out", tmp_path / "t", "--pattern", "(a"],
                        ["--pattern: split pattern '(a' is not a valid regex"]),
        "duplicate special tokens": (["train", "--data", text, "--vocab-size", "300", "--out", tmp_path / "t",
                                      "--special-tokens", "<|a|>", "<|a|>"], ["--special-tokens: '<|a|>' is given twice"]),
        "out is a directory": (["train", "--data", text, "--vocab-size", "300", "--out", tmp_path],
                               [f"--out {tmp_path}: is a directory"]),
        "encode out is a file": (["encode", "--tokenizer", text, "--data", text, "--out", tmp_path / "a_file"],
                                 [f"--out {tmp_path / 'a_file'}: is a file"]),
    }[case]
    code, _, err = cli(capsys, "tokenizer", *argv)
    assert_one_line_error(code, err, "tokenizer", *fragments)


def test_a_disk_that_fills_during_a_save_is_one_line_and_the_last_checkpoint_survives(
        corpus, tmp_path, capsys, monkeypatch):
    saves = []
    real = ckpt.write_staged_file

    def filling_disk(path, data):
        saves.append(path)
        if len(saves) > 4:   # the first checkpoint (model, optimizer, tokenizer, state) is written whole
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(path, data)
    monkeypatch.setattr(ckpt, "write_staged_file", filling_disk)
    out = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--data", corpus, "--out", out, *TINY, "--max-iters", "4", "--eval-interval", "2")
    assert_one_line_error(code, err, "train", "No space left on device", "the disk is full", "--resume")
    assert ckpt.load_checkpoint(out).step == 2        # the previous checkpoint is whole
    assert not [p for p in (out / "checkpoints").iterdir() if p.name.startswith(".staging")]


@pytest.mark.parametrize("command", ["train", "sample", "eval"])
def test_device_cuda_without_cupy_is_one_line(command, trained, corpus, tmp_path, capsys, monkeypatch):
    from autograd import backend
    monkeypatch.setattr(backend, "cupy_available", lambda: False)   # as on a machine without CuPy or a GPU
    argv = {"train": ["--data", corpus, "--out", tmp_path / "run", *TINY],
            "sample": ["--ckpt", trained], "eval": ["--ckpt", trained]}[command]
    code, _, err = cli(capsys, command, *argv, "--device", "cuda")
    assert_one_line_error(code, err, command, "--device cuda: CuPy with a CUDA device is not available here",
                          "use --device cpu")


STATE_DAMAGE = {   # what the issue found, and what it must be called
    "file record is a string": (lambda s: s["files"].__setitem__("model.safetensors", "abc"),
                                "the record of model.safetensors is 'abc'"),
    "missing size": (lambda s: s["files"]["model.safetensors"].pop("size"), "the record of model.safetensors is"),
    "step is text": (lambda s: s.__setitem__("step", "abc"), "'step' is 'abc', not a non-negative integer"),
    "negative n_embd": (lambda s: s["model_config"].__setitem__("n_embd", -5), "model_config is unusable"),
    "pipeline garbage": (lambda s: s.__setitem__("pipeline", "garbage"), "'pipeline' is 'garbage', not an object"),
    "unknown dropout scheme": (lambda s: s["rng"].__setitem__("dropout", "keyd"),
                               "dropout (\"keyed\", an object or null)"),
}


@pytest.mark.parametrize("damage", STATE_DAMAGE)
@pytest.mark.parametrize("command", ["info", "sample", "eval"])
def test_a_state_json_with_wrong_types_is_one_line(damage, command, trained, copy_of, capsys):
    run = copy_of(trained)
    change, message = STATE_DAMAGE[damage]
    edit_state(run / "last", change)
    code, _, err = cli(capsys, command, "--ckpt", run)
    if command == "info" and damage == "negative n_embd":   # info builds no model: it shows what the file says
        assert code == 0, err
        return
    assert_one_line_error(code, err, command, f"{last_dir(run) / 'state.json'}: ", message)


def test_a_resume_from_a_state_json_with_wrong_types_is_one_line(trained, copy_of, capsys):
    run = copy_of(trained)
    edit_state(run / "last", lambda s: s["rng"]["train_sampler"]["state"].__setitem__("state", "abc"))
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--max-iters", "6", "--progress", "none")
    assert_one_line_error(code, err, "train", "state.json: cannot be resumed from")
    edit_state(run / "last", lambda s: s["train_config"].__setitem__("lr", "fast"))
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--max-iters", "6", "--progress", "none")
    assert_one_line_error(code, err, "train", "state.json: the saved settings are unusable", "--lr 'fast'")


def make_hugging_face_dir(tmp_path, config: dict | list) -> Path:
    from tinyllm import GPT, GPTConfig
    directory = tmp_path / "hf"
    GPT(GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=16)).save_pretrained(directory)
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("config, message", [
    ([1, 2], "holds a list, not an object"),
    ({"model_type": "gpt2", "n_layer": 1, "n_head": 2}, "lacks the field 'vocab_size'"),
    ({"model_type": "gpt2", "vocab_size": 300, "n_positions": 16, "n_layer": 1, "n_head": 2, "n_embd": "wide"},
     "n_embd='wide' must be a positive integer"),
    ({"model_type": "gpt2", "vocab_size": 300, "n_positions": 16, "n_layer": 1, "n_head": 2, "n_embd": 16,
      "layer_norm_epsilon": [1]}, "TypeError"),
    ({"model_type": "gpt2", "vocab_size": 10 ** 12, "n_positions": 16, "n_layer": 1, "n_head": 2, "n_embd": 16},
     "of memory available here"),
])
def test_finetuning_from_a_hugging_face_folder_with_a_bad_config_is_one_line(
        config, message, tmp_path, capsys, write_records):
    hf = make_hugging_face_dir(tmp_path, config)
    code, _, err = cli(capsys, "finetune", "--task", "classify", "--init-from", hf, "--tokenizer", hf / "tok",
                       "--data", write_records(), "--out", tmp_path / "ft", "--max-iters", "1", "--progress", "none")
    assert_one_line_error(code, err, "finetune", f"--init-from {hf}", message)


@pytest.fixture
def write_records(tmp_path):
    """write_records(labels=...) -> a .jsonl classification file (and a char tokenizer at hf/tok if needed)."""
    def write(labels=("pos", "neg") * 6, name="data.jsonl"):
        from tinyllm.tokenizer import BPETokenizer
        hf_tok = tmp_path / "hf" / "tok"
        if (tmp_path / "hf").is_dir() and not hf_tok.exists():
            BPETokenizer({bytes([b]): b for b in range(256)}, "gpt2").save(hf_tok)
        path = tmp_path / name
        path.write_text("".join(json.dumps({"text": f"text number {i}", "label": label}) + "\n"
                                for i, label in enumerate(labels)))
        return path
    return write


def make_base(tmp_path) -> Path:
    from tinyllm import GPT, GPTConfig
    from tinyllm.tokenizer import EOT_TOKEN, CharTokenizer
    tokenizer = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz 0123456789", special_tokens=[EOT_TOKEN])
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16)
    ckpt.save_checkpoint(tmp_path / "base", model=GPT(config), tokenizer=tokenizer,
                         state={"step": 0, "model_config": config.to_dict(), "train_config": {"dtype": "float32"}})
    return tmp_path / "base"


def test_lora_targets_that_match_nothing_are_one_line(tmp_path, capsys, write_records):
    code, _, err = cli(capsys, "finetune", "--task", "classify", "--init-from", make_base(tmp_path), "--data",
                       write_records(), "--out", tmp_path / "ft", "--lora-rank", "2", "--lora-targets", "nosuch",
                       "--max-iters", "1", "--progress", "none")
    assert_one_line_error(code, err, "finetune", "--lora-targets nosuch", "matches no Linear layer")


def test_eval_of_integer_weights_is_one_line_and_a_huge_loss_is_an_infinite_perplexity(trained, copy_of, capsys):
    from tinyllm.commands.evaluate import perplexity
    assert perplexity(1000.0) == float("inf") and perplexity(1.0) == pytest.approx(np.e)
    run = copy_of(trained)
    tensors = safetensors_load((run / "last" / "model.safetensors").read_bytes())
    tensors["wte.weight"] = np.full(tensors["wte.weight"].shape, 10 ** 6, dtype=np.int64)
    rewrite_file(run / "last", "model.safetensors", safetensors_save(tensors))
    code, _, err = cli(capsys, "eval", "--ckpt", run)
    assert_one_line_error(code, err, "eval", "model.safetensors: tensor 'wte.weight' is stored as int64")


def set_shard_ids(path: Path, change) -> None:
    """Apply change(ids) to a token shard's ids, with both checksums fixed (a valid-looking shard)."""
    data = bytearray(path.read_bytes())
    itemsize = int.from_bytes(data[10:12], "little")
    ids = np.frombuffer(bytes(data[64:]), dtype=f"<u{itemsize}").copy()
    change(ids)
    data[64:] = ids.tobytes()
    data[24:28] = zlib.crc32(bytes(data[64:])).to_bytes(4, "little")
    data[28:32] = bytes(4)
    data[28:32] = zlib.crc32(bytes(data[:64])).to_bytes(4, "little")
    path.write_bytes(bytes(data))


def test_a_cached_shard_with_out_of_range_ids_is_found_when_opened_and_rebuilt(trained, copy_of, capsys):
    run = copy_of(trained)
    shard = next((run / "data").glob("*/shard_000000.bin"))
    set_shard_ids(shard, lambda ids: ids.__setitem__(slice(None), 999))   # every id past the vocabulary
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--max-iters", "8", "--progress", "none",
                       "--sample-tokens", "0")
    assert code == 0, err
    assert "is unusable" in err and "holds id 999, not below vocab_size" in err and "rebuilding it" in err


# ---- item 5: wrong results reported as success -----------------------------------------------


@pytest.mark.parametrize("max_iters", ["3", "4"])
def test_a_resume_with_no_steps_left_is_an_error_not_nan(max_iters, trained, copy_of, capsys):
    run = copy_of(trained)
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--max-iters", max_iters, "--progress", "none")
    assert_one_line_error(code, err, "train", f"--max-iters {max_iters}: the run in {run} is already at step 4",
                          "pass a larger --max-iters")
    assert "nan" not in err


def test_finetuning_from_a_finetuned_checkpoint_names_its_real_base(tmp_path, capsys, write_records):
    base = make_base(tmp_path)
    data = write_records()
    assert cli(capsys, "finetune", "--task", "classify", "--init-from", base, "--data", data, "--out",
               tmp_path / "clf", "--max-iters", "1", "--progress", "none")[0] == 0
    code, _, err = cli(capsys, "finetune", "--task", "classify", "--init-from", tmp_path / "clf", "--data", data,
                       "--out", tmp_path / "clf2", "--max-iters", "1", "--progress", "none")
    assert_one_line_error(code, err, "finetune", f"is a finetuned checkpoint; finetune from its base model ({base})")


# ---- item 6: nonsense accepted silently ------------------------------------------------------


@pytest.mark.parametrize("kind", ["executable", "invalid utf-8", "utf-16", "utf-16 without bom"])
def test_training_text_must_be_utf8_text(kind, tmp_path, capsys):
    path = tmp_path / "data.txt"
    sample = "the cat sat on the mat. " * 50
    if kind == "executable":
        path = Path(shutil.which("ls") or sys.executable)
    else:
        path.write_bytes({"invalid utf-8": sample.encode() + b"\xff\xfe\xfa" + sample.encode(),
                          "utf-16": sample.encode("utf-16"), "utf-16 without bom": sample.encode("utf-16-le")}[kind])
    code, _, err = cli(capsys, "train", "--data", path, "--out", tmp_path / "run", *TINY, "--max-iters", "2")
    expected = {"executable": "binary data", "invalid utf-8": "not valid UTF-8 near byte 1200",
                "utf-16": "UTF-16 or UTF-32 text",
                "utf-16 without bom": "binary data, or UTF-16 text without a byte-order mark (a NUL byte at byte 1)"}[kind]
    assert_one_line_error(code, err, "train", f"{path}: {expected}")


@pytest.mark.parametrize("dtype, values", [("int64", 1), ("bool", True), ("uint8", 3), ("float32", np.nan),
                                           ("float32", np.inf)])
def test_weights_that_are_not_finite_floats_are_refused(dtype, values, trained, copy_of, capsys):
    run = copy_of(trained)
    tensors = safetensors_load((run / "last" / "model.safetensors").read_bytes())
    tensors["lm_head.weight" if "lm_head.weight" in tensors else "wte.weight"] = \
        np.full(tensors["wte.weight"].shape, values, dtype=dtype)
    rewrite_file(run / "last", "model.safetensors", safetensors_save(tensors))
    code, _, err = cli(capsys, "sample", "--ckpt", run, "--max-new-tokens", "2")
    expected = "holds NaN or infinite values" if dtype == "float32" else f"is stored as {dtype}"
    assert_one_line_error(code, err, "sample", "model.safetensors: tensor 'wte.weight'", expected)


def test_state_json_file_names_must_stay_inside_the_checkpoint(trained, copy_of, tmp_path, capsys):
    run = copy_of(trained)
    secret = tmp_path / "secret.txt"
    secret.write_text("not for you")
    relative = os.path.relpath(secret, run / "last")
    edit_state(run / "last", lambda s: s["files"].__setitem__(relative, {
        "size": secret.stat().st_size, "sha256": hashlib.sha256(secret.read_bytes()).hexdigest()}))
    code, _, err = cli(capsys, "info", "--ckpt", run)
    assert_one_line_error(code, err, "info", f"file name {relative!r} is not a plain file name inside the checkpoint")


def test_a_checkpoint_file_that_is_a_link_is_refused(trained, copy_of, tmp_path, capsys):
    run = copy_of(trained)
    target = last_dir(run) / "tokenizer.json"
    moved = tmp_path / "elsewhere.json"
    shutil.move(target, moved)
    os.symlink(moved, target)
    code, _, err = cli(capsys, "info", "--ckpt", run)
    assert_one_line_error(code, err, "info", f"{target}: not a regular file")


@pytest.mark.parametrize("label", [[1, 2], {"a": 1}, 0.5])
def test_classification_labels_must_be_strings_ints_or_bools(label, tmp_path, capsys, write_records):
    data = write_records(labels=["pos", "neg", label] * 4)
    code, _, err = cli(capsys, "finetune", "--task", "classify", "--init-from", make_base(tmp_path), "--data", data,
                       "--out", tmp_path / "ft", "--max-iters", "1", "--progress", "none")
    assert_one_line_error(code, err, "finetune", f"{data}: record 3: the label {label!r} is a {type(label).__name__}")


def test_lora_rank_is_bounded_by_the_adapted_layers(tmp_path, capsys, write_records):
    code, _, err = cli(capsys, "finetune", "--task", "classify", "--init-from", make_base(tmp_path), "--data",
                       write_records(), "--out", tmp_path / "ft", "--lora-rank", "100000", "--max-iters", "1",
                       "--progress", "none")
    assert_one_line_error(code, err, "finetune", "--lora-rank 100000", "LoRA rank=100000 is larger than",
                          "smaller dimension (16)")


def test_a_corrupted_token_cache_is_found_by_its_checksum_and_rebuilt(trained, copy_of, capsys):
    run = copy_of(trained)
    shard = next((run / "data").glob("*/shard_000000.bin"))
    data = bytearray(shard.read_bytes())
    data[100] ^= 1                                          # one id changed, still in range
    shard.write_bytes(bytes(data))
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--max-iters", "6", "--progress", "none",
                       "--sample-tokens", "0")
    assert code == 0, err
    assert "the ids are corrupted (checksum mismatch)" in err and "rebuilding it" in err


@pytest.mark.parametrize("path, what", [("/dev/null", "a character device")])
def test_data_that_is_not_a_regular_file_says_what_it_is(path, what, tmp_path, capsys):
    code, _, err = cli(capsys, "train", "--data", path, "--out", tmp_path / "run", *TINY)
    assert_one_line_error(code, err, "train", f"--data {path}: is {what}, not a text file or a directory")
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    code, _, err = cli(capsys, "train", "--data", fifo, "--out", tmp_path / "run", *TINY)
    assert_one_line_error(code, err, "train", f"--data {fifo}: is a named pipe (FIFO)")


def test_debug_shows_the_traceback(capsys, monkeypatch, tmp_path):
    code, _, err = cli(capsys, "--debug", "sample", "--ckpt", tmp_path / "nothing")
    assert code == 2 and "Traceback" in err and err.strip().splitlines()[-1].startswith("tinyllm sample: error:")
    monkeypatch.setenv("TINYLLM_DEBUG", "1")
    code, _, err = cli(capsys, "info", "--ckpt", tmp_path / "nothing")
    assert code == 2 and "Traceback" in err


# ---- going on as an attacker would -------------------------------------------------------------


def test_a_metrics_line_torn_by_a_crash_does_not_stop_a_resume(trained, copy_of, capsys):
    run = copy_of(trained)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "train_lo')                  # a crash mid-append
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--max-iters", "6", "--progress", "none",
                       "--sample-tokens", "0")
    assert code == 0, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 6 and all(r["step"] != 5 for r in records)


@pytest.mark.parametrize("line, flag", [("data = 5", "--data 5"), ("tokenizer = [1]", "--tokenizer [1]"),
                                        ("partition = 'best'", "--partition 'best'"), ("data_ext = 7", "--data-ext 7")])
def test_a_config_file_with_values_of_the_wrong_type_is_one_line(line, flag, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(line + "\n")
    code, _, err = cli(capsys, "train", "--config", config, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "train", flag)


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
