"""parallel: pipeline (and data) parallel pretraining over MPI.

- `schedules`: GPipe, 1F1B and zero-bubble H1 as pure functions of (stages, microbatches, stage);
- `simulate`: runs all stages' schedules together without MPI (deadlocks, memory, timelines);
- `partition`: contiguous groups of blocks per stage (uniform, by parameters, by measured time);
- `grid`: world = data-parallel x pipeline communicators;
- `p2p`: buffer sends and receives of activations and gradients (host or CUDA-aware);
- `runner`: executes a schedule on real ranks inside the training loop;
- `trace`: Chrome/Perfetto traces and timeline pictures.

Only `grid`, `p2p` and `runner` need mpi4py; the rest is plain Python.
"""
