"""Helpers for the hostile-input and fault tests: `tinyllm` in a bounded subprocess, the one-line check,
`tinyllm` in this process (`cli`), and the small edits the tests make to checkpoints.

`run_tinyllm(*argv, memory=..., timeout=...)` runs the real command line in a fresh Python whose
address space is capped with resource.setrlimit(RLIMIT_AS) (1.5 GiB unless told), so a memory
bomb fails the test instead of the machine; it returns (exit status, stdout, stderr). A run
that outlives its timeout has its process group killed and fails the test. `run_many` runs
several commands in one such subprocess (the fuzz tests: one start-up per example).
"""
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MEMORY_LIMIT = 3 << 29       # 1.5 GiB of address space: numpy and the interpreter need about 0.5
TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "1", "--warmup-iters", "1", "--sample-tokens", "0", "--progress", "none"]

LAUNCHER = textwrap.dedent("""\
    import resource, sys
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from tinyllm.cli import main
    sys.exit(main(sys.argv[2:]))
""")


def run_tinyllm(*argv, memory: int = MEMORY_LIMIT, timeout: float = 120, env=None, cwd=None, wrapper=()):
    """(exit status, stdout, stderr) of `tinyllm argv...` in a subprocess capped at `memory` bytes
    (`wrapper`: a command to run it under, e.g. setpriv)."""
    command = [*wrapper, sys.executable, "-c", LAUNCHER, str(memory), *map(str, argv)]
    proc = subprocess.Popen(command, cwd=cwd or REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                                 "PYTHONPATH": str(REPO), **(env or {})})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"tinyllm {' '.join(map(str, argv))} ran past {timeout} s:\n{err[-2000:]}")
    return proc.returncode, out, err


def assert_one_line_error(code: int, err: str, command: str, *fragments):
    """Exit 2, no traceback, exactly one error line (the last), naming every fragment."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}:\n{err}"
    assert "Traceback" not in err, err
    errors = [line for line in lines if ": error:" in line]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert errors[0].startswith(f"tinyllm {command}: error: "), err
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"


def corpus_text(n_lines: int = 300, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "it"]
    return "\n".join(" ".join(rng.choice(words, size=6)) + "." for _ in range(n_lines)) + "\n"


MANY_LAUNCHER = textwrap.dedent("""\
    import contextlib, io, json, resource, sys
    limit = int(sys.argv[1])
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from tinyllm.cli import main
    with open(sys.argv[2]) as f:
        commands = json.load(f)
    for argv in commands:
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(argv)
            except SystemExit as exit_:   # argparse's own usage errors
                code = exit_.code
        print(json.dumps({"argv": argv, "code": code, "err": err.getvalue()}), flush=True)
""")


def run_many(commands, workdir, memory: int = MEMORY_LIMIT, timeout: float = 300) -> list:
    """Run several `tinyllm` commands (lists of arguments) one after the other in ONE subprocess capped
    at `memory` bytes (a fuzz example's mutations share the interpreter's start-up); returns one
    {"argv", "code", "err"} per command. A crash or a hang fails the test, naming the commands."""
    plan = os.path.join(workdir, "commands.json")
    with open(plan, "w") as f:
        json.dump([[str(a) for a in argv] for argv in commands], f)
    command = [sys.executable, "-c", MANY_LAUNCHER, str(memory), plan]
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace", start_new_session=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1",
                                 "PYTHONPATH": str(REPO)})
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        done = len(out.splitlines())
        pytest.fail(f"command {done} of {len(commands)} ran past the {timeout} s budget: {commands[done]}")
    results = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or len(results) != len(commands):
        pytest.fail(f"the runner died (status {proc.returncode}) at command {len(results)} of {len(commands)}: "
                    f"{commands[len(results)] if len(results) < len(commands) else ''}\n{err[-3000:]}")
    return results


def assert_clean_outcome(result: dict) -> None:
    """A fuzzed command either works (0) or says what is wrong in one line (2): never a traceback,
    an internal error, or a second line."""
    code, err = result["code"], result["err"]
    where = f"tinyllm {' '.join(result['argv'])}"
    assert code in (0, 2), f"{where} exited {code}:\n{err[-3000:]}"
    assert "Traceback" not in err, f"{where}:\n{err[-3000:]}"
    if code == 2:
        assert_one_line_error(code, err, result["argv"][0])


def start_training(run, corpus, *argv, links=("last",), timeout: float = 60):
    """`tinyllm train` in a subprocess (stderr piped), checkpointing every step of a tiny model for as
    long as it is let run, once `run/last` (and the other `links`) exist; the caller ends it."""
    import time  # noqa: PLC0415
    proc = subprocess.Popen([sys.executable, "-m", "tinyllm.cli", "train", "--data", str(corpus), "--out", str(run),
                             *TINY, "--max-iters", "100000", "--eval-interval", "1", *map(str, argv)],
                            cwd=REPO, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + timeout
    while not all((Path(run) / link).exists() for link in links):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no checkpoint within {timeout} s:\n{proc.communicate()[1][-3000:]}")
        time.sleep(0.02)
    return proc


# ---- in this process: the command line, and checkpoints to damage ------------------------------

def cli(capsys, *argv):
    """(exit status, stdout, stderr) of `tinyllm argv...` run in this process."""
    from tinyllm.cli import main  # noqa: PLC0415
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


def make_base(tmp_path) -> Path:
    """A tiny untrained base checkpoint (char tokenizer with an end-of-text token) at tmp_path/base."""
    from tinyllm import GPT, GPTConfig
    from tinyllm import checkpoint as ckpt
    from tinyllm.tokenizer import EOT_TOKEN, CharTokenizer
    tokenizer = CharTokenizer.train("abcdefghijklmnopqrstuvwxyz 0123456789", special_tokens=[EOT_TOKEN])
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16)
    ckpt.save_checkpoint(tmp_path / "base", model=GPT(config), tokenizer=tokenizer,
                         state={"step": 0, "model_config": config.to_dict(), "train_config": {"dtype": "float32"}})
    return tmp_path / "base"
