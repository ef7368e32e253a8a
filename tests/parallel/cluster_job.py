"""Several pipelined runs in one mpiexec job, one after the other: one launch for many layouts.

    mpiexec -n 4 python tests/parallel/cluster_job.py JOBS.json
    JOBS.json: [{"config": {settings by their flat names}, "stop_at": null or a step, "result": "r0.json"}, ...]

Each run is `parallel.runner.run_pipeline` (what `tinyllm train` runs under mpiexec), with its
own run directory; rank 0 writes each run's losses to its "result" file. The first run that
does not finish ends the job with its status.
"""
import json
import sys

from parallel.runner import run_pipeline
from tinyllm.settings import RunSettings


def main(path: str) -> int:
    with open(path) as f:
        jobs = json.load(f)
    for job in jobs:
        status = run_pipeline(RunSettings.from_dict(job["config"]), stop_at=job["stop_at"], result_path=job["result"])
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
