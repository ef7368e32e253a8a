"""Errors that were internal errors, silently accepted or said unclearly: each one line now.

Items 5 (a char tokenizer file with `tokens 0`), 9 (`tinyllm train --resume` on a finetune
run) and the smaller ones: a TOML key given twice, `--trace` outside a pipeline or naming a
directory or a missing folder, a run directory that is a link loop, a full disk's message
naming the file, and an interrupted run with `--progress none` saying how it ended.
"""
import errno
import json
import os
import signal

import pytest

from .bounded import TINY, assert_one_line_error, cli, start_training
from tinyllm import checkpoint as ckpt
from tinyllm.processes import fork_available


def test_a_char_tokenizer_file_with_no_characters_is_one_line(tmp_path, corpus, capsys):
    empty = tmp_path / "empty.tok"
    empty.write_text("tinyllm-tokenizer 1 char\ntokens 0\n")
    code, _, err = cli(capsys, "train", "--data", corpus, "--tokenizer", empty, "--out", tmp_path / "run", *TINY)
    assert_one_line_error(code, err, "train", f"{empty}, line 2: a char tokenizer file lists at least one character")
    some = tmp_path / "ab.tok"             # characters, but not the corpus's
    some.write_text('tinyllm-tokenizer 1 char\ntokens 2\n0 "a"\n1 "b"\n')
    code, _, err = cli(capsys, "train", "--data", corpus, "--tokenizer", some, "--out", tmp_path / "run2", *TINY)
    assert_one_line_error(code, err, "train", "character 't' at position 0 is not in this CharTokenizer's vocabulary")


def test_train_resume_on_a_finetune_run_says_to_resume_it_with_finetune(trained, tmp_path, capsys):
    data = tmp_path / "records.jsonl"
    data.write_text("".join(json.dumps({"text": t, "label": t.split()[1]}) + "\n"
                            for t in ["the cat sat", "a dog ran", "the dog sat", "a cat ran"] * 3))
    run = tmp_path / "clf"
    code, _, err = cli(capsys, "finetune", "--task", "classify", "--init-from", trained, "--data", data, "--out", run,
                    "--max-iters", "1", "--workers", "1", "--progress", "none")
    assert code == 0, err
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--max-iters", "5", "--progress", "none")
    assert_one_line_error(code, err, "train", f"--out {run}: is a finetuning run",
                          f"tinyllm finetune --out {run} --resume")
    assert not (run / "data").exists()      # nothing tokenized into the run first


@pytest.mark.parametrize("toml", ["max-iters = 3\nmax_iters = 5\n", "max_iters = 3\n[train]\nmax_iters = 5\n"])
def test_a_toml_setting_given_twice_is_one_line(toml, tmp_path, corpus, capsys):
    (tmp_path / "run.toml").write_text(toml)
    code, _, err = cli(capsys, "train", "--config", tmp_path / "run.toml", "--data", corpus, "--out", tmp_path / "run")
    assert_one_line_error(code, err, "train", "max_iters is set twice", "= 3", "= 5", "keep one")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("case", ["one process", "a directory", "a missing folder"])
def test_trace_is_checked_before_anything_runs(case, tmp_path, corpus, capsys):
    pipeline = [] if case == "one process" else ["--pipeline-stages", "2"]
    trace = {"one process": tmp_path / "t.json", "a directory": tmp_path,
             "a missing folder": tmp_path / "no" / "such" / "t.json"}[case]
    code, _, err = cli(capsys, "train", "--data", corpus, "--out", tmp_path / "run", *TINY, *pipeline, "--trace", trace)
    message = {"one process": "traces are written by pipeline runs", "a directory": "is a directory",
               "a missing folder": f"the directory {trace.parent} does not exist"}[case]
    assert_one_line_error(code, err, "train", f"--trace {trace}: {message}")
    assert not (tmp_path / "run").exists() and not (tmp_path / "no").exists()


def test_an_out_that_is_a_link_loop_says_so(tmp_path, corpus, capsys):
    os.symlink(tmp_path / "b", tmp_path / "a")
    os.symlink(tmp_path / "a", tmp_path / "b")
    code, _, err = cli(capsys, "train", "--data", corpus, "--out", tmp_path / "a", *TINY)
    assert_one_line_error(code, err, "train", f"--out {tmp_path / 'a'}: is a symbolic link that loops")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads fd paths from /proc")
def test_a_full_disk_during_a_save_names_the_file(tmp_path, corpus, capsys, monkeypatch):
    """ENOSPC from the write itself carries no file name; the line must still say which file."""
    real_fsync = os.fsync

    def filling_disk(fd):
        if "/checkpoints/.staging-" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)
    monkeypatch.setattr(os, "fsync", filling_disk)
    run = tmp_path / "run"
    code, _, err = cli(capsys, "train", "--data", corpus, "--out", run, *TINY, "--max-iters", "2", "--workers", "1")
    assert_one_line_error(code, err, "train", f"{run / 'checkpoints'}/.staging-", ".safetensors: No space left on "
                          "device", "the disk is full")
    assert not (run / "last").exists() and not os.listdir(run / "checkpoints")


def test_an_interrupted_run_with_progress_none_still_says_how_it_ended(tmp_path, corpus):
    run = tmp_path / "run"
    proc = start_training(run, corpus, "--workers", "1")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    step = ckpt.read_state(run)["step"]
    assert f"interrupted by SIGTERM at step {step}: saved" in err and "--resume" in err


@pytest.mark.skipif(not fork_available(), reason="worker processes need fork (Linux)")
def test_a_worker_process_killed_by_the_out_of_memory_killer_is_one_line(tmp_path, corpus):
    """Item 6: SIGKILL to a worker process (what the out-of-memory killer sends) mid-run."""
    run = tmp_path / "run"
    proc = start_training(run, corpus, "--workers", "2", "--parallel", "processes")
    workers = [int(pid) for task in os.listdir(f"/proc/{proc.pid}/task")
               for pid in open(f"/proc/{proc.pid}/task/{task}/children").read().split()]
    assert workers, "the run forked no worker"
    os.kill(workers[0], signal.SIGKILL)
    _, err = proc.communicate(timeout=60)
    assert_one_line_error(proc.returncode, err, "train", "worker process 1 was killed by SIGKILL",
                          "out-of-memory killer", "--resume")
    assert ckpt.load_checkpoint(run).step >= 1


@pytest.mark.parametrize("brk", ["\n", "\r\n", "\v", "\f", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029"])
def test_a_message_quoting_any_line_break_stays_one_line(brk, tmp_path, trained, capsys):
    """A damaged file may put any of the characters str.splitlines() breaks on into a message
    (here a checkpoint's train_config.data, which eval reads by default)."""
    import shutil
    target = tmp_path / "ckpt"
    shutil.copytree((trained / "last").resolve(), target)
    state = json.loads((target / "state.json").read_text())
    state["train_config"]["data"] = f"gone{brk}missing"
    (target / "state.json").write_text(json.dumps(state))
    code, _, err = cli(capsys, "eval", "--ckpt", target, "--max-tokens", "40")
    assert_one_line_error(code, err, "eval", "gone missing")
