"""Sharded checkpoints for pipelined runs, in tinyllm.checkpoint's directory format.

A pipelined checkpoint is a tinyllm checkpoint directory whose tensors are split by stage:

    model-stage0-of-2.safetensors       stage 0's parameters under their global names
    optimizer-stage0-of-2.safetensors   its optimizer buffers (`<name>.exp_avg`, ...)
    model-stage1-of-2.safetensors ...
    state.json                          as for one process, plus "pipeline": the manifest

The manifest (`state["pipeline"]`) records the stage count, the partition (block ranges)
and, per shard, its files and parameter names. A tied embedding is stored once, in stage
0's shard. Only the replica-0 rank of each stage writes; everyone writes into one staging
directory that rank 0 created, and rank 0 writes state.json (with every file's size and
sha256) last and publishes the directory with tinyllm.checkpoint's atomic rename and link
swap, so a crash mid-save leaves the previous checkpoint whole.

Loading merges the shards into one name -> array dict (`load_any`), which serves every
direction: a pipelined checkpoint into one process (sampling, eval, continuing there),
a one-process checkpoint into any stage count, and a pipelined one into another layout;
each stage then keeps the names it owns.

Left out: writing from more than one replica (they are identical), partial loads that
read only a stage's own files.
"""
from __future__ import annotations

from pathlib import Path

from tinyllm import checkpoint as ckpt

PIPELINE_FORMAT = "tinyllm-pipeline-shards"


def shard_files(stage: int, n_stages: int) -> tuple[str, str]:
    return f"model-stage{stage}-of-{n_stages}.safetensors", f"optimizer-stage{stage}-of-{n_stages}.safetensors"


def owned_for_saving(names, stage_model) -> list:
    """The parameter names this stage writes: all it holds, except a tied weight on the last stage."""
    tied = stage_model.tied_name()
    return [n for n in names if not (stage_model.is_last and not stage_model.is_first and n == tied)]


def _optimizer_key_owner(key: str, names: set) -> str | None:
    """The parameter name an optimizer buffer key (`<param>.exp_avg`) belongs to."""
    base = key.rsplit(".", 1)[0]
    return base if base in names else None


def save_pipeline_checkpoint(grid, stage_model, optimizer, run_dir, state: dict, tokenizer=None,
                             best: bool = False) -> Path | None:
    """Collective over the world: every rank calls it; returns the published path on rank 0."""
    world = grid.world
    staging = ckpt.new_staging_dir(run_dir) if grid.rank == 0 else None
    staging = Path(world.bcast(str(staging) if staging else None, root=0))
    records, shard = {}, None
    error = None
    try:
        if grid.replica == 0:
            names = owned_for_saving([n for n, _ in stage_model.named_parameters()], stage_model)
            params = dict(stage_model.named_parameters())
            model_file, optimizer_file = shard_files(grid.stage, grid.n_stages)
            records[model_file] = ckpt._write_file(staging / model_file,
                                                   ckpt.tensor_bytes({n: params[n].data for n in names}))
            shard = {"stage": grid.stage, "model": model_file, "parameters": names}
            if optimizer is not None:
                keep = set(names)
                arrays = {k: a for k, a in optimizer.state_arrays().items() if _optimizer_key_owner(k, keep)}
                records[optimizer_file] = ckpt._write_file(staging / optimizer_file, ckpt.tensor_bytes(arrays))
                shard["optimizer"] = optimizer_file
    except Exception as exc:  # report on rank 0 after the gather so no rank is left waiting
        error = f"rank {grid.rank}: {exc!r}"
    gathered = world.gather((records, shard, error), root=0)
    if grid.rank != 0:
        world.Barrier()
        return None
    try:
        errors = [e for _, _, e in gathered if e]
        if errors:
            raise OSError("saving the pipeline checkpoint failed: " + "; ".join(errors))
        files = {}
        shards = []
        for rec, sh, _ in gathered:
            files.update(rec)
            if sh is not None:
                shards.append(sh)
        shards.sort(key=lambda s: s["stage"])
        manifest = {"format": PIPELINE_FORMAT, "n_stages": grid.n_stages,
                    "data_parallel": grid.shape.data_parallel,
                    "partition": stage_model.partition.to_json(), "shards": shards}
        full_state = {**state, "pipeline": manifest}
        if optimizer is not None:
            full_state["optimizer"] = optimizer.state_meta()
        if tokenizer is not None:
            tokenizer.save(staging / ckpt.TOKENIZER_FILE)
            files[ckpt.TOKENIZER_FILE] = ckpt._write_file(staging / ckpt.TOKENIZER_FILE,
                                                          (staging / ckpt.TOKENIZER_FILE).read_bytes())
        full_state = {"format": ckpt.FORMAT, "version": ckpt.VERSION, **full_state, "files": files}
        import json  # noqa: PLC0415
        ckpt._write_file(staging / ckpt.STATE_FILE,
                         (json.dumps(full_state, indent=2, sort_keys=True) + "\n").encode("utf-8"))
        ckpt.fsync_directory(staging)
        return ckpt.publish_checkpoint(run_dir, staging, int(state["step"]),
                                       links=("last", "best") if best else ("last",))
    except BaseException:
        import shutil  # noqa: PLC0415
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        world.Barrier()


def load_any(path, with_optimizer: bool = True) -> ckpt.Checkpoint:
    """A checkpoint, one-process or pipelined, as one Checkpoint with merged name -> array dicts."""
    directory = ckpt.resolve_checkpoint_dir(path)
    state = ckpt.read_state(directory)
    manifest = state.get("pipeline")
    if manifest is None:
        return ckpt.load_checkpoint(directory, with_optimizer)
    files = state["files"]
    model_state, optimizer_state = {}, {} if with_optimizer else None
    for shard in manifest["shards"]:
        for key, target in (("model", model_state), ("optimizer", optimizer_state)):
            if key not in shard or target is None:
                continue
            name = shard[key]
            if name not in files:
                raise ckpt.CheckpointError(f"{directory / ckpt.STATE_FILE}: shard file {name} is not listed")
            target.update(ckpt.load_tensors(directory / name, files[name]))
    if optimizer_state is not None and not optimizer_state:
        optimizer_state = None
    return ckpt.Checkpoint(path=directory, state=state, model_state=model_state, optimizer_state=optimizer_state)


def restrict(checkpoint: ckpt.Checkpoint, names) -> ckpt.Checkpoint:
    """The same checkpoint with only the parameters `names` (and their optimizer buffers)."""
    names = set(names)
    missing = sorted(names - set(checkpoint.model_state))
    if missing:
        raise ckpt.CheckpointError(f"{checkpoint.path}: has no {', '.join(missing[:4])}; it was saved from "
                                   "a different model config")
    model_state = {n: a for n, a in checkpoint.model_state.items() if n in names}
    optimizer_state = None
    if checkpoint.optimizer_state is not None:
        optimizer_state = {k: a for k, a in checkpoint.optimizer_state.items() if _optimizer_key_owner(k, names)}
    return ckpt.Checkpoint(path=checkpoint.path, state=checkpoint.state, model_state=model_state,
                           optimizer_state=optimizer_state)
