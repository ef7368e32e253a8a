"""Ranks that start tinyllm's watchdog and then wait outside MPI (as rank 0 does while it tokenizes a
corpus): `mpiexec -n N python tests/parallel/idle_job.py SECONDS`. Only the parent watch can tell them
that their launcher is gone (Open MPI leaves such a rank running when mpirun is killed)."""
import sys
import time

from mpi4py import MPI

from parallel import deadline

deadline.start(0)                     # no deadline: nothing here waits on another rank
print(f"rank {MPI.COMM_WORLD.Get_rank()} idle", file=sys.stderr, flush=True)
time.sleep(float(sys.argv[1]))
