"""The run directory's lock where the file system has no flock (NFS without a lock manager).

There the holder's line in DIR/.lock is the lock (tinyllm/runlock.py): a live process on this
host, or any process on another host, holds the directory; a dead one's line is taken over.
Issue 23: a lock that took a dead holder for alive (never taking a crashed run's lock over,
against runlock's own docstring) went through the whole suite; these tests fail on it.
"""
import errno
import json
import socket
import subprocess
import sys

import pytest

from tinyllm import runlock


@pytest.fixture
def no_flock(monkeypatch):
    import fcntl

    def unavailable(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")
    monkeypatch.setattr(fcntl, "flock", unavailable)


def dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def leave_line(run, pid, host=None):
    run.mkdir(exist_ok=True)
    (run / runlock.LOCK_FILE).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(),
                                                     "started": "2024-01-01 00:00:00", "command": "tinyllm train"}) + "\n")


def test_a_dead_runs_line_is_taken_over(no_flock, tmp_path):
    run = tmp_path / "run"
    pid = dead_pid()
    leave_line(run, pid)
    lock = runlock.acquire(run)
    try:
        assert lock.took_over["pid"] == pid and f"taking over the lock left by pid {pid}" in lock.takeover_message()
        assert json.loads((run / runlock.LOCK_FILE).read_text())["pid"] != pid   # our line now
    finally:
        lock.release()


def test_a_live_process_or_another_hosts_line_holds_the_directory(no_flock, tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        for run, pid, host in ((tmp_path / "a", sleeper.pid, None), (tmp_path / "b", dead_pid(), "another-host")):
            leave_line(run, pid, host)
            with pytest.raises(runlock.RunDirectoryError, match=rf"in use by another run \(pid {pid} on host "
                                                                 rf".*this file system has no flock: if that run is "
                                                                 rf"gone, delete {run / '.lock'}"):
                runlock.acquire(run)
    finally:
        sleeper.kill()
        sleeper.wait()
