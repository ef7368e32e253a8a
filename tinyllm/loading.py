"""A trained GPT from a checkpoint, for sampling, evaluation and finetuning.

    model, checkpoint = load_gpt("runs/demo")            # a run directory (its last) or a checkpoint
    model, checkpoint = load_gpt("runs/demo/best", device="cuda", dtype="float64")

The one loader of a checkpoint's GPT: `tinyllm sample` and `eval` load with it, finetuning
loads its base model with it. The checkpoint's model_config is checked before anything is
built (its parameter count against the stored tensors, the memory it needs against what is
free), so a file cannot make tinyllm allocate what it does not hold.

Left out: loading the optimizer (resuming a run is tinyllm/build.py's), Hugging Face
directories (tinyllm/pretrained.py).
"""
from __future__ import annotations

from tinyllm import checkpoint as ckpt
from tinyllm.limits import check_model_fits
from tinyllm.model import GPT, GPTConfig


def load_gpt(path, device: str = "cpu", dtype: str | None = None) -> tuple:
    """(GPT with the checkpoint's weights, the Checkpoint) from a checkpoint or run directory (or a
    Checkpoint already read). dtype None: the dtype the run trained in."""
    checkpoint = path if isinstance(path, ckpt.Checkpoint) else ckpt.load_checkpoint(path, with_optimizer=False)
    model_config = saved_model_config(checkpoint)
    if dtype is None:
        dtype = checkpoint.state.get("train_config", {}).get("dtype", "float32")
        if dtype not in ("float32", "float64"):
            raise ckpt.CheckpointError(f"{checkpoint.path / ckpt.STATE_FILE}: train_config.dtype is {dtype!r}, "
                                       "not float32 or float64; the checkpoint is corrupted or was edited")
    where = checkpoint.path / ckpt.STATE_FILE
    stored = sum(int(array.size) for array in checkpoint.model_state.values())
    count = GPT.count_parameters(model_config)   # before the model is built: a file cannot make it huge
    if stored != count:
        raise ckpt.CheckpointError(f"{where}: model_config describes {count:,} parameters but "
                                   f"the model files hold {stored:,}; the checkpoint is corrupted or was edited")
    check_model_fits(count, dtype, copies=1, source=str(where))
    model = GPT(model_config, dtype=dtype, device=device)
    ckpt.load_model_state(model, checkpoint)
    return model, checkpoint


def saved_model_config(checkpoint) -> GPTConfig:
    """The checkpoint's model_config as a GPTConfig, or a CheckpointError naming state.json."""
    try:
        return GPTConfig.from_dict(checkpoint.state["model_config"])
    except (KeyError, TypeError, ValueError) as error:
        raise ckpt.CheckpointError(f"{checkpoint.path / ckpt.STATE_FILE}: model_config is unusable ({error}); "
                                   "the checkpoint is corrupted or was edited") from None
