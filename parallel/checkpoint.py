"""The collective save of a pipelined run: one checkpoint directory, its tensors split by stage.

The layout (one model and one optimizer file per stage, and a manifest in state.json) is
tinyllm.checkpoint's, which also loads it: `load_checkpoint` merges the shards into one
process's view, and `restrict` gives a stage of any layout its share. This module only
writes it, as a collective over the world:

- rank 0 creates the staging directory and broadcasts its path;
- every rank asks the optimizer for its arrays (collective for a ZeRO-1 optimizer, which
  gathers its replicas' shards to replica 0 there, so the files hold the unsharded layout);
- the replica-0 rank of each stage writes its shard files (`write_staged_file`: fsynced,
  each with a size and sha256 record); a tied embedding is written once, by stage 0;
- rank 0 gathers the records, then writes the tokenizer and state.json (the manifest and
  every file's record) last, and publishes the directory with tinyllm.checkpoint's atomic
  rename and link swap, so a crash mid-save leaves the previous checkpoint whole.

A failure on any rank is gathered and raised on rank 0, after every rank has reached the
gather, so no rank is left waiting.

Left out: writing from more than one replica (they are identical).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from tinyllm import checkpoint as ckpt
from tinyllm import io


def owned_for_saving(names, stage_model) -> list:
    """The parameter names this stage writes: all it holds, except a tied weight on the last stage."""
    tied = stage_model.tied_name()
    return [n for n in names if not (stage_model.is_last and not stage_model.is_first and n == tied)]


def _write_shard(grid, stage_model, optimizer, optimizer_arrays, staging: Path) -> tuple[dict, dict]:
    """This stage's shard files -> (file name -> record, the manifest's entry for the shard)."""
    params = dict(stage_model.named_parameters())
    names = owned_for_saving(list(params), stage_model)
    model_file, optimizer_file = ckpt.shard_files(grid.stage, grid.n_stages)
    records = {model_file: ckpt.write_staged_file(staging / model_file,
                                                  io.tensor_bytes({n: params[n].data for n in names}))}
    shard = {"stage": grid.stage, "model": model_file, "parameters": names}
    if optimizer is not None:
        arrays = ckpt.optimizer_arrays_for(optimizer_arrays, names)
        records[optimizer_file] = ckpt.write_staged_file(staging / optimizer_file, io.tensor_bytes(arrays))
        shard["optimizer"] = optimizer_file
    return records, shard


def save_pipeline_checkpoint(grid, stage_model, optimizer, run_dir, state: dict, tokenizer=None,
                             best: bool = False) -> Path | None:
    """Collective over the world: every rank calls it; returns the published path on rank 0."""
    world = grid.world
    staging = ckpt.new_staging_dir(run_dir) if grid.rank == 0 else None
    staging = Path(world.bcast(str(staging) if staging else None, root=0))
    records, shard, error = {}, None, None
    try:
        optimizer_arrays = optimizer.state_arrays() if optimizer is not None else None   # every rank: may be collective
        if grid.replica == 0:
            records, shard = _write_shard(grid, stage_model, optimizer, optimizer_arrays, staging)
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
        written = {}
        for rank_records, _, _ in gathered:
            written.update(rank_records)
        shards = sorted((s for _, s, _ in gathered if s is not None), key=lambda s: s["stage"])
        manifest = {"format": ckpt.PIPELINE_FORMAT, "n_stages": grid.n_stages,
                    "data_parallel": grid.shape.data_parallel, "virtual_stages": stage_model.n_chunks,
                    "partition": stage_model.partition.to_json(), "shards": shards}
        full_state = {**state, "pipeline": manifest}
        if optimizer is not None:
            full_state["optimizer"] = optimizer.state_meta()
        ckpt.write_checkpoint_files(staging, {}, full_state, tokenizer, written=written)
        return ckpt.publish_checkpoint(run_dir, staging, int(state["step"]),
                                       links=("last", "best") if best else ("last",))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        world.Barrier()
