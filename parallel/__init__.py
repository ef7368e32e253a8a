"""parallel: pipeline (and data) parallel pretraining over MPI.

- `schedules`: GPipe, 1F1B, zero-bubble H1 and interleaved 1F1B as pure functions of (stages, microbatches, stage);
- `simulate`: runs all stages' schedules together without MPI (deadlocks, memory, timelines);
- `partition`: contiguous groups of blocks per stage (uniform, by parameters, by measured time);
- `grid`: world = data-parallel x pipeline communicators;
- `p2p`: buffer sends and receives of activations and gradients (host or CUDA-aware);
- `stage`, `engine`: a GPT pruned to one stage (one chunk or several), and the executor of its schedule;
- `zero`: the optimizer state sharded across data-parallel replicas (ZeRO-1);
- `recompute`: blocks that keep only their input and recompute their forward in backward;
- `runner`: the training loop on real ranks (`run_pipeline`, what `tinyllm train` calls under mpiexec);
- `checkpoint`: the collective save, one shard per stage plus a manifest (tinyllm.checkpoint loads any layout);
- `trace`: Chrome/Perfetto traces and timeline pictures.

`grid`, `p2p`, `engine`, `runner` and checkpoint saving talk to MPI (mpi4py is imported only when
they run); schedules, the simulator, partitions, stage pruning and traces are plain Python.
"""
