"""The collective save of a pipelined run: one checkpoint directory, its tensors split by stage.

The layout (one model and one optimizer file per stage, and a manifest in state.json) is
tinyllm.checkpoint's, which also loads it: `load_checkpoint` merges the shards into one
process's view, and `restrict` gives a stage of any layout its share. This module only
writes it, as a collective over the world:

- rank 0 creates the staging directory and broadcasts its path;
- every rank asks the optimizer for its arrays (collective for a ZeRO-1 optimizer, which
  gathers its replicas' shards to replica 0 there, so the files hold the unsharded layout);
- the replica-0 rank of each stage writes its shard files (`write_tensor_file`: fsynced,
  each with a size and sha256 record, and refused, NonFiniteWeightsError, when a tensor holds
  NaN or infinity: the one check before publishing, tinyllm.checkpoint's); a tied embedding
  is written once, by stage 0;
- rank 0 gathers the records, then writes the tokenizer and state.json (the manifest and
  every file's record) last, and publishes the directory with tinyllm.checkpoint's atomic
  rename and link swap, so a crash mid-save leaves the previous checkpoint whole;
- rank 0 broadcasts the outcome: every rank returns (rank 0 the published path, the others
  None) or every rank raises the same error.

A failure on any rank is gathered to rank 0 after every rank has reached the gather, and
comes back from the broadcast on every rank, so no rank is left waiting and every rank
stops alike (a user error, e.g. non-finite weights or a full disk, as itself).

Left out: writing from more than one replica (they are identical).
"""
from __future__ import annotations

import shutil
from pathlib import Path

from tinyllm import checkpoint as ckpt
from tinyllm.errors import UserError


def owned_for_saving(names, stage_model) -> list:
    """The parameter names this stage writes: all it holds, except a tied weight on the last stage."""
    tied = stage_model.tied_name()
    return [n for n in names if not (stage_model.is_last and not stage_model.is_first and n == tied)]


def _write_shard(grid, stage_model, optimizer, optimizer_arrays, staging: Path) -> tuple[dict, dict]:
    """This stage's shard files -> (file name -> record, the manifest's entry for the shard)."""
    params = dict(stage_model.named_parameters())
    names = owned_for_saving(list(params), stage_model)
    model_file, optimizer_file = ckpt.shard_files(grid.stage, grid.n_stages)
    records = {model_file: ckpt.write_tensor_file(staging / model_file, {n: params[n].data for n in names})}
    shard = {"stage": grid.stage, "model": model_file, "parameters": names}
    if optimizer is not None:
        arrays = ckpt.optimizer_arrays_for(optimizer_arrays, names)
        records[optimizer_file] = ckpt.write_tensor_file(staging / optimizer_file, arrays)
        shard["optimizer"] = optimizer_file
    return records, shard


def save_pipeline_checkpoint(grid, stage_model, optimizer, run_dir, state: dict, tokenizer=None,
                             best: bool = False) -> Path | None:
    """Collective over the world: every rank calls it; returns the published path on rank 0 (None on
    the others), or raises the same error on every rank."""
    world = grid.world
    staging = ckpt.new_staging_dir(run_dir) if grid.rank == 0 else None
    staging = Path(world.bcast(str(staging) if staging else None, root=0))
    records, shard, error = {}, None, None
    try:
        optimizer_arrays = optimizer.state_arrays() if optimizer is not None else None   # every rank: may be collective
        if grid.replica == 0:
            records, shard = _write_shard(grid, stage_model, optimizer, optimizer_arrays, staging)
    except Exception as exc:  # reported after the gather so no rank is left waiting
        error = _portable(exc, grid.rank)
    gathered = world.gather((records, shard, error), root=0)
    outcome = None
    try:
        if grid.rank == 0:
            errors = [e for _, _, e in gathered if e is not None]
            if errors:
                shutil.rmtree(staging, ignore_errors=True)
                outcome = errors[0]
            else:
                outcome = _publish(grid, stage_model, optimizer, run_dir, state, tokenizer, best, staging, gathered)
    except Exception as exc:  # noqa: BLE001 - every rank raises it, after the broadcast
        outcome = _portable(exc, 0)
    finally:
        outcome = world.bcast(outcome, root=0)   # rank 0 reaches it however its part ended
    if isinstance(outcome, BaseException):
        raise outcome
    return Path(outcome) if grid.rank == 0 else None


def _publish(grid, stage_model, optimizer, run_dir, state, tokenizer, best, staging, gathered) -> str:
    """Rank 0's part once every shard is written: the manifest and state.json, then the atomic
    publish; the staging directory removed on any failure."""
    try:
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
        return str(ckpt.publish_checkpoint(run_dir, staging, int(state["step"]),
                                           links=("last", "best") if best else ("last",)))
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _portable(error: Exception, rank: int) -> Exception:
    """`error` as it can travel to the other ranks (pickled): a user error as itself, anything else
    as an OSError or RuntimeError saying which rank raised it."""
    if isinstance(error, UserError):
        return error
    where = f"saving the pipeline checkpoint failed on rank {rank}: {error!r}"
    if isinstance(error, OSError):
        return OSError(error.errno, where, error.filename)
    return RuntimeError(where)
