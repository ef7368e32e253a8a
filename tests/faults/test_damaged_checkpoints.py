"""Damaged checkpoints and caches: a wrong value in state.json, a tensor of the wrong kind, a file that
is a link or points outside its checkpoint, a token cache that lies, a torn metrics line, a disk
that fills during a save. Each is found and named in one line (exit 2), or rebuilt where tinyllm
wrote it itself; nothing is read as if it were right, and the last good checkpoint stays whole.
"""
import errno
import hashlib
import json
import os
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load as safetensors_load
from safetensors.numpy import save as safetensors_save

from .bounded import TINY, assert_one_line_error, cli, edit_state, last_dir, rewrite_file
from tinyllm import checkpoint as ckpt


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


@pytest.mark.parametrize("max_iters", ["3", "4"])
def test_a_resume_with_no_steps_left_is_an_error_not_nan(max_iters, trained, copy_of, capsys):
    run = copy_of(trained)
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--max-iters", max_iters, "--progress", "none")
    assert_one_line_error(code, err, "train", f"--max-iters {max_iters}: the run in {run} is already at step 4",
                          "pass a larger --max-iters")
    assert "nan" not in err


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


def test_a_metrics_line_torn_by_a_crash_does_not_stop_a_resume(trained, copy_of, capsys):
    run = copy_of(trained)
    with open(run / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "train_lo')                  # a crash mid-append
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--max-iters", "6", "--progress", "none",
                       "--sample-tokens", "0")
    assert code == 0, err
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["step"] == 6 and all(r["step"] != 5 for r in records)
