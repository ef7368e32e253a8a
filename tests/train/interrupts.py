"""Runs of `tinyllm` in a subprocess that a test interrupts with a signal, and their child processes.

    from .interrupts import interrupt_after_step   # in a test beside it (tests/ is a package)
"""
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]


def interrupt_after_step(argv: list, step: int, sig=signal.SIGTERM, group: bool = False, seen=None) -> tuple:
    """Run `tinyllm ARGV --max-iters 100000 ...` in a subprocess, send `sig` once it logs `step`;
    returns (exit status, what it printed after that).

    group: send the signal to the whole process group, as Ctrl-C on a terminal does (the run in
    a session of its own). seen: a list that receives the pids of the run's child processes as
    they were when the signal was sent.
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-m", "tinyllm.cli", *map(str, argv), "--max-iters", "100000",
                             "--eval-interval", "100000", "--log-interval", "1", "--progress", "log"],
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=group)
    deadline = time.monotonic() + 60
    for line in proc.stderr:  # wait until training steps are running
        if line.startswith("step") and "/100000" in line and int(line.split()[1].split("/")[0]) >= step:
            break
        assert time.monotonic() < deadline, "training did not start within 60 s"
    if seen is not None:
        seen.extend(child_pids(proc.pid))
    if group:
        os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)
    rest = proc.stderr.read()
    return proc.wait(timeout=60), rest


def child_pids(pid: int) -> list:
    """The pids of a process's children (Linux /proc)."""
    children = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        children += [int(c) for c in (task / "children").read_text().split()]
    return children


def process_gone(pid: int, timeout: float = 5.0) -> bool:
    """True once `pid` no longer exists (reaped: not even a zombie), waiting up to `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z" and time.monotonic() > deadline - 0.1:
            return False
        time.sleep(0.05)
    return False
