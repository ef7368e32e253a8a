"""Bad flags and input files: one line naming the flag or the file, the value and the fix, exit 2.

A tokenizer command's nonsense, `--device cuda` without CuPy, a Hugging Face folder with a bad
config, LoRA targets that match nothing or a rank too large, a finetuned checkpoint given as a
base, training text that is not UTF-8, labels of the wrong type, data that is not a regular file,
a settings file of the wrong types; and `--debug` shows the traceback the line stands for.
"""
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from .bounded import TINY, assert_one_line_error, cli, make_base


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


@pytest.mark.parametrize("command", ["train", "sample", "eval"])
def test_device_cuda_without_cupy_is_one_line(command, trained, corpus, tmp_path, capsys, monkeypatch):
    from autograd import backend
    monkeypatch.setattr(backend, "cupy_available", lambda: False)   # as on a machine without CuPy or a GPU
    argv = {"train": ["--data", corpus, "--out", tmp_path / "run", *TINY],
            "sample": ["--ckpt", trained], "eval": ["--ckpt", trained]}[command]
    code, _, err = cli(capsys, command, *argv, "--device", "cuda")
    assert_one_line_error(code, err, command, "--device cuda: CuPy with a CUDA device is not available here",
                          "use --device cpu")


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


def test_lora_targets_that_match_nothing_are_one_line(tmp_path, capsys, write_records):
    code, _, err = cli(capsys, "finetune", "--task", "classify", "--init-from", make_base(tmp_path), "--data",
                       write_records(), "--out", tmp_path / "ft", "--lora-rank", "2", "--lora-targets", "nosuch",
                       "--max-iters", "1", "--progress", "none")
    assert_one_line_error(code, err, "finetune", "--lora-targets nosuch", "matches no Linear layer")


def test_finetuning_from_a_finetuned_checkpoint_names_its_real_base(tmp_path, capsys, write_records):
    base = make_base(tmp_path)
    data = write_records()
    assert cli(capsys, "finetune", "--task", "classify", "--init-from", base, "--data", data, "--out",
               tmp_path / "clf", "--max-iters", "1", "--progress", "none")[0] == 0
    code, _, err = cli(capsys, "finetune", "--task", "classify", "--init-from", tmp_path / "clf", "--data", data,
                       "--out", tmp_path / "clf2", "--max-iters", "1", "--progress", "none")
    assert_one_line_error(code, err, "finetune", f"is a finetuned checkpoint; finetune from its base model ({base})")


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


@pytest.mark.parametrize("line, flag", [("data = 5", "--data 5"), ("tokenizer = [1]", "--tokenizer [1]"),
                                        ("partition = 'best'", "--partition 'best'"), ("data_ext = 7", "--data-ext 7")])
def test_a_config_file_with_values_of_the_wrong_type_is_one_line(line, flag, tmp_path, capsys):
    config = tmp_path / "run.toml"
    config.write_text(line + "\n")
    code, _, err = cli(capsys, "train", "--config", config, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "train", flag)


@pytest.mark.parametrize("how, message", [
    (["--n-kv-head", "3"], "--n-head 4 is not divisible by --n-kv-head 3"),
    ("bias = \"yes\"\n", "--bias 'yes': must be true or false"),
])
def test_model_settings_that_make_no_model_name_the_flag_before_any_data_is_read(how, message, tmp_path, capsys):
    """In the flags' (and TOML keys') terms, not GPTConfig's, and before the corpus is tokenized."""
    if isinstance(how, str):
        (tmp_path / "run.toml").write_text(how)
        how = ["--config", str(tmp_path / "run.toml")]
    code, _, err = cli(capsys, "train", "--out", tmp_path / "run", *how)
    assert_one_line_error(code, err, "train", message)
    assert not (tmp_path / "run").exists()
