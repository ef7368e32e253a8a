"""A reader never sees a mix of two checkpoints.

A run saving every step swaps `last` and prunes the checkpoint it replaced, while readers
(`load_checkpoint`, `tinyllm info`, `sample`, `eval`) read the run in a loop. Every read must
succeed, from one checkpoint: the reader resolves `last` once, reads that one directory (the
tokenizer too) holding it against pruning (a shared flock), and resolves again once if it was
pruned all the same (tinyllm/rundir.py). Before the fix, about 1 direct load in 130 said
"corrupted: its sha256 does not match" and 1 `sample` in 30 failed.
"""
import contextlib
import io
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np

from .bounded import REPO, start_training
from tinyllm import checkpoint as ckpt
from tinyllm.cli import main

READ_SECONDS = 2.5

SAVER = textwrap.dedent("""
    import sys
    from tinyllm import checkpoint as ckpt
    from tinyllm.model import GPT, GPTConfig
    from tinyllm.tokenizer import CharTokenizer
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8), dtype="float64")
    tokenizer = CharTokenizer.train("abcdefghijk")
    step = 0
    while True:
        step += 1
        for _, p in model.named_parameters():
            p.data[...] = step
        ckpt.save_checkpoint(sys.argv[1], model=model, tokenizer=tokenizer, state={"step": step}, best=step % 3 == 0)
        print(step, flush=True)
""")


def start(argv, env=None):
    return subprocess.Popen(argv, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})})


def wait_for(run, proc, links=("last",), timeout=60.0):
    deadline = time.monotonic() + timeout
    while not all((run / link).exists() for link in links):
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "no checkpoint within the deadline"
        time.sleep(0.02)


def stop(proc) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)


def test_loads_during_saves_always_read_one_whole_checkpoint(tmp_path):
    """A process saving as fast as it can, every tensor equal to the step: each load must succeed and
    hold one save's tensors and state (a mix of two saves would hold two values)."""
    run = tmp_path / "run"
    saver = start([sys.executable, "-c", SAVER, str(run)])
    loads, failures = 0, []
    try:
        wait_for(run, saver, links=("last", "best"))
        deadline = time.monotonic() + READ_SECONDS / 2
        while time.monotonic() < deadline:
            for path in (run, run / "best", run / "last"):
                try:
                    loaded = ckpt.load_checkpoint(path)
                except (ckpt.CheckpointError, OSError) as error:   # noqa: PERF203 - every failure counts
                    failures.append(str(error))
                    continue
                values = {float(a.flat[0]) for a in loaded.model_state.values()}
                if values != {float(loaded.step)} or loaded.tokenizer().vocab_size != 11:
                    failures.append(f"{path}: a mix: step {loaded.step}, tensors {sorted(values)}")
                loads += 1
        saves = ckpt.read_state(run)["step"]
    finally:
        stop(saver)
    assert not failures, f"{len(failures)} of {loads + len(failures)} loads failed: {failures[:3]}"
    assert loads > 50 and saves > 10, (loads, saves)


def test_a_run_saving_every_step_and_readers_in_a_loop_never_fail(tmp_path, corpus):
    """The promise's test: `tinyllm train` checkpointing every step, and load_checkpoint, `tinyllm info`,
    `sample` and `eval` reading it in a loop meanwhile: zero failures."""
    run = tmp_path / "run"
    trainer = start_training(run, corpus, "--workers", "1", "--log-interval", "100000")
    reads = {"load": 0, "info": 0, "sample": 0, "eval": 0}
    failures = []
    try:
        first = ckpt.read_state(run)["step"]
        deadline = time.monotonic() + READ_SECONDS
        while time.monotonic() < deadline:
            for kind in ("load",) * 6 + ("info", "sample", "eval"):   # loads are the quick ones: most reads
                try:
                    if kind == "load":
                        ckpt.load_checkpoint(run).tokenizer()
                    else:
                        argv = {"info": ["--json"], "sample": ["--max-new-tokens", "3"],
                                "eval": ["--max-tokens", "40"]}[kind]
                        out, err = io.StringIO(), io.StringIO()
                        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                            code = main([kind, "--ckpt", str(run), *argv])
                        if code != 0:
                            failures.append(f"{kind}: exit {code}: {err.getvalue().strip()}")
                            continue
                except Exception as error:  # noqa: BLE001 - every failure counts
                    failures.append(f"{kind}: {error!r}")
                    continue
                reads[kind] += 1
        last = ckpt.read_state(run)["step"]
        assert trainer.poll() is None, trainer.communicate()[1][-3000:]
    finally:
        stop(trainer)
    assert not failures, f"{len(failures)} failures in {sum(reads.values()) + len(failures)} reads: {failures[:3]}"
    assert last - first >= 10 and min(reads.values()) >= 5, (first, last, reads)   # saves happened meanwhile
    assert np.isfinite(ckpt.load_checkpoint(run).state["val_loss"])
