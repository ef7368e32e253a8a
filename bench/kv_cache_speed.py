"""KV-cache sampling vs full recompute: 256 new tokens with the baby shape, same seed, same tokens.

Both runs call `model.generate` with the same arguments (temperature 0.8, top_k 50, seed 0,
a 1-token prompt); one decodes with the KV cache (tinyllm/decode.py: the layers' Functions
on raw arrays, on vectors for one row), the other recomputes the whole context window at
every step through the model's forward (`use_cache=False`, the same windows, so the tokens
must be equal and the script asserts it). A third column recomputes nanoGPT's window (the last block_size
tokens, `window_keep=block_size`): a different conditioning rule, so its tokens differ;
it is shown because it is the usual baseline. Runs alternate, best of --repeats, so drift
on a shared machine cancels.

    python bench/kv_cache_speed.py [--threads 1] [--repeats 3] [--tokens 256] [--batch 1] [--block-size 64]
Goal (issue 8): cached at least 8x faster than full recompute, identical tokens.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=1, help="BLAS/OpenMP threads (set before NumPy loads)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--tokens", type=int, default=256, help="new tokens per run")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--dtype", default="float32")
    p.add_argument("--block-size", type=int, default=64, help="context length (64 = the baby preset)")
    p.add_argument("--no-nanogpt", action="store_true", help="skip the last-block_size-tokens column")
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(args.threads)

    import numpy as np

    from tinyllm import GPT, GPTConfig

    config = GPTConfig.preset("baby", vocab_size=65, block_size=args.block_size)
    model = GPT(config, seed=0, dtype=args.dtype)
    prompt = np.zeros((args.batch, 1), dtype=np.int64)
    common = dict(max_new_tokens=args.tokens, temperature=0.8, top_k=50, seed=0)
    runs = {
        "cached": dict(use_cache=True),
        "full recompute (same windows)": dict(use_cache=False),
    }
    if not args.no_nanogpt:
        runs["full recompute (last block_size tokens)"] = dict(use_cache=False, window_keep=config.block_size)

    model.generate(prompt, **{**common, "max_new_tokens": 8})            # warm-up (imports, table caches)
    best = {name: float("inf") for name in runs}
    outputs = {}
    for _ in range(args.repeats):
        for name, kwargs in runs.items():
            start = time.perf_counter()
            outputs[name] = model.generate(prompt, **common, **kwargs)
            best[name] = min(best[name], time.perf_counter() - start)
    assert np.array_equal(outputs["cached"], outputs["full recompute (same windows)"]), \
        "the KV cache changed the sampled tokens"

    print(f"baby shape {config.n_layer}x{config.n_head}x{config.n_embd}, block {config.block_size}, "
          f"{args.dtype}, batch {args.batch}, {args.tokens} new tokens, threads {args.threads}, "
          f"best of {args.repeats}; cached tokens == full-recompute tokens: yes")
    cached = best["cached"]
    for name, seconds in best.items():
        ratio = "" if name == "cached" else f"   {seconds / cached:5.1f}x the cached time"
        print(f"  {name:42s} {seconds:7.3f} s  {1e3 * seconds / args.tokens:6.2f} ms/step{ratio}")


if __name__ == "__main__":
    main()
