"""No command deletes what it did not write.

Pruning removes only the checkpoints this process's own link swaps unlinked, and never one a
reader holds (tinyllm/rundir.py); a run directory that holds checkpoints but no `last` (removed,
or dangling after the checkpoint it named was deleted to free space) is refused for a new run,
naming what is there and how to resume, and `--resume` there says the same.
"""
import os
import shutil

import numpy as np
import pytest

from .bounded import TINY, assert_one_line_error, cli
from tinyllm import checkpoint as ckpt
from tinyllm import rundir
from tinyllm.cli import main
from tinyllm.model import GPT, GPTConfig

CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)


def contents(run) -> dict:
    """Every file under `run` (links as their targets) -> its bytes, to compare before and after."""
    found = {}
    for root, dirs, files in os.walk(run):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            path = os.path.join(root, name)
            found[os.path.relpath(path, run)] = (os.readlink(path) if os.path.islink(path)
                                                 else open(path, "rb").read())
    found.pop(".lock", None)
    return found


@pytest.mark.parametrize("damage", ["last removed", "last dangling"])
def test_a_run_directory_without_its_last_is_refused_and_left_as_it_was(damage, trained, copy_of, corpus, capsys):
    run = copy_of(trained)
    if damage == "last removed":
        (run / "last").unlink()
    else:   # the checkpoint it named deleted to free space; `best` names an older one
        shutil.copytree(run / "last", run / "checkpoints" / "step-0000002")
        shutil.rmtree(run / os.readlink(run / "last"))
        os.symlink("checkpoints/step-0000002", run / "best.tmp")
        os.replace(run / "best.tmp", run / "best")
    before = contents(run)
    names = rundir.checkpoint_names(run)
    code, _, err = cli(capsys, "train", "--data", corpus, "--out", run, *TINY, "--max-iters", "4", "--eval-interval", "1")
    assert_one_line_error(code, err, "train", f"--out {run}: a run was here", names[-1],
                          f"ln -sfn checkpoints/{names[-1]} {run / 'last'}, then --resume", "choose a new --out")
    assert contents(run) == before                           # nothing pruned, metrics.jsonl untouched
    code, _, err = cli(capsys, "train", "--out", run, "--resume", "--max-iters", "6")
    assert_one_line_error(code, err, "train", f"--resume: {run} has no checkpoint to resume", names[-1], "ln -sfn")
    assert contents(run) == before


def test_a_directory_left_with_links_to_deleted_checkpoints_says_how_to_start_again(trained, copy_of, corpus, capsys):
    run = copy_of(trained)
    shutil.rmtree(run / "checkpoints")
    code, _, err = cli(capsys, "train", "--data", corpus, "--out", run, *TINY, "--max-iters", "2")
    assert_one_line_error(code, err, "train", "it holds no checkpoint", f"delete {run / 'last'} and {run / 'best'}")


def save(run, model, step, best=False):
    return ckpt.save_checkpoint(run, model=model, state={"step": step}, best=best)


def test_pruning_deletes_only_the_checkpoints_this_process_unlinked(tmp_path):
    run, model = tmp_path / "run", GPT(CONFIG, seed=0)
    save(run, model, 1, best=True)
    save(run, model, 2)
    mine = run / "checkpoints" / "by-hand"                 # a copy the user made, and a checkpoint of an earlier
    shutil.copytree(run / "checkpoints" / "step-0000002", mine)   # process that this one never linked
    orphan = run / "checkpoints" / "step-0000000"
    shutil.copytree(run / "checkpoints" / "step-0000001", orphan)
    save(run, model, 3)                                    # unlinks step 2 (last moved): deleted
    save(run, model, 4, best=True)                         # unlinks step 3 and step 1 (best moved): deleted
    assert rundir.checkpoint_names(run) == ["by-hand", "step-0000000", "step-0000004"]


def test_a_checkpoint_being_read_is_pruned_by_a_later_save_not_under_the_reader(tmp_path):
    run, model = tmp_path / "run", GPT(CONFIG, seed=0)
    first = save(run, model, 1)
    with rundir.reading(first):
        save(run, model, 2)                                # unlinks step 1, which a reader holds: kept
        assert first.is_dir() and ckpt.load_checkpoint(first).step == 1
    save(run, model, 3)                                    # the next save deletes it (and step 2)
    assert rundir.checkpoint_names(run) == ["step-0000003"]


def test_a_reader_of_a_checkpoint_pruned_meanwhile_reads_the_new_last(tmp_path, monkeypatch):
    """Without flock (NFS without a lock manager) a save may prune the directory a reader resolved;
    the reader resolves `last` again, once, and reads the new checkpoint whole."""
    run, model = tmp_path / "run", GPT(CONFIG, seed=0)
    save(run, model, 1)
    monkeypatch.setattr(rundir, "fcntl", None)
    real_read_state_file, saved = ckpt.read_state_file, []

    def save_in_between(file):   # a run saves (and prunes) just after this reader resolved `last`
        if not saved:
            saved.append(save(run, model, 2))
        return real_read_state_file(file)
    monkeypatch.setattr(ckpt, "read_state_file", save_in_between)
    loaded = ckpt.load_checkpoint(run)
    assert loaded.step == 2 and loaded.path == run / "checkpoints" / "step-0000002"
    assert all(np.array_equal(loaded.model_state[n], p.data) for n, p in model.named_parameters())


def test_a_corpus_kept_under_the_run_directory_is_not_swept_with_old_token_caches(tmp_path, corpus, capsys):
    """The data cache keeps one token cache per run directory, deleting older ones: only caches."""
    run = tmp_path / "run"
    texts = run / "data" / "mytexts"
    texts.mkdir(parents=True)
    shutil.copy(corpus, texts / "a.txt")
    assert main(["train", "--data", str(texts), "--out", str(run), *TINY, "--max-iters", "1", "--workers", "1"]) == 0
    assert (texts / "a.txt").read_bytes() == corpus.read_bytes()


def test_a_copy_linked_by_hand_as_last_is_resumed_from_and_kept(tmp_path):
    run, model = tmp_path / "run", GPT(CONFIG, seed=0)
    save(run, model, 1)
    shutil.copytree(run / "last", run / "checkpoints" / "mine")
    rundir.point_link(run / "last", "checkpoints/mine")    # ln -sfn checkpoints/mine run/last, then --resume
    save(run, model, 2)
    assert (run / "checkpoints" / "mine").is_dir() and ckpt.load_checkpoint(run).step == 2
