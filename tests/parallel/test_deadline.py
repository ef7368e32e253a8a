"""The watchdog without MPI: a wait past its deadline ends the job with one line naming the operation,
the peer and its host, and the step; no deadline with --comm-timeout 0; a process whose parent dies
exits within a second (parallel/deadline.py). The same under real launchers: test_cluster_faults.py."""
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

from parallel.deadline import ORPHAN_STATUS, TIMEOUT_STATUS, Watchdog, WatchedComm
from parallel.p2p import ACTIVATION, describe_tag, message_tag

REPO = Path(__file__).resolve().parents[2]


class SilentPeer:
    """A communicator whose Recv waits until released (a peer that never sends)."""

    def __init__(self):
        self.released = threading.Event()

    def Recv(self, buffer, source=0, tag=0):
        assert self.released.wait(10), "the watchdog never fired"

    def Get_rank(self):
        return 1


def watched(timeout):
    ended = []
    peer = SilentPeer()

    def end_job(status):
        ended.append(status)
        peer.released.set()

    dog = Watchdog(timeout, poll=0.02, end_job=end_job)
    dog.rank, dog.hosts, dog.step = 1, ["nodeA", "nodeB"], 7
    return dog, peer, ended, WatchedComm(peer, "pipeline", watchdog=dog, world_ranks=[0, 1])


def test_a_wait_past_its_deadline_ends_the_job_with_one_line_naming_it(capfd):
    dog, peer, ended, comm = watched(0.2)
    dog.host = "nodeB"
    tag = message_tag(ACTIVATION, 2)
    started = time.monotonic()
    comm.call("Recv", np.empty(3), source=0, tag=tag, what=describe_tag(tag))
    assert ended == [TIMEOUT_STATUS] and 0.2 <= time.monotonic() - started < 2
    line = capfd.readouterr().err.strip()
    assert "\n" not in line
    assert line.startswith("tinyllm: rank 1 on nodeB gave up at step 7 after waiting 0 s (--comm-timeout 0.2) "
                           "in Recv of the activation of microbatch 2 from rank 0 on nodeA; ending the job"), line
    assert dog.current is None                         # the wait is over


def test_collectives_name_their_group_and_root():
    dog, _, _, comm = watched(0.2)
    assert comm.describe_peers("Allreduce", (), {}) == "over the pipeline group (rank 0 on nodeA, rank 1 on nodeB)"
    assert comm.describe_peers("Bcast", (None,), {"root": 0}).startswith("from rank 0 on nodeA (root) over")
    assert comm.describe_peers("Waitall", (), {"peers": [0]}) == "(sends to rank 0 on nodeA)"


def test_no_deadline_with_timeout_zero():
    dog, peer, ended, comm = watched(0.0)
    threading.Timer(0.4, peer.released.set).start()
    comm.Recv(np.empty(3), source=0, tag=0)              # through __getattr__: a blocking name
    assert ended == []


def test_a_process_whose_parent_dies_exits_within_a_second():
    """parent (stands for hydra_pmi_proxy or prted) -> child running the watchdog, asleep outside MPI;
    SIGKILL the parent: the child is gone (or a zombie nobody reaps) within about a second."""
    child = ("import sys, time; sys.path.insert(0, sys.argv[1]); from parallel import deadline; "
             "deadline.start(0); print('ready', flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c",
                               "import subprocess, sys; p = subprocess.Popen([sys.executable, '-c', sys.argv[1], "
                               "sys.argv[2]]); print(p.pid, flush=True); p.wait()", child, str(REPO)],
                              stdout=subprocess.PIPE, text=True, env={**os.environ, "PMI_RANK": "0"})
    pid = int(parent.stdout.readline())
    time.sleep(0.5)
    assert alive(pid)
    os.kill(parent.pid, signal.SIGKILL)
    parent.wait()
    started = time.monotonic()
    while alive(pid) and time.monotonic() - started < 5:
        time.sleep(0.05)
    assert not alive(pid), "the orphan kept running"
    assert time.monotonic() - started < 2
    assert ORPHAN_STATUS != 0


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_a_process_not_started_by_a_launcher_has_no_parent_to_watch():
    from parallel.deadline import launched_by_mpi
    assert launched_by_mpi({"PMI_RANK": "1"}) and launched_by_mpi({"OMPI_COMM_WORLD_RANK": "0"})
    assert not launched_by_mpi({"HOME": "/root"})
