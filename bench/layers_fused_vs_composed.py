"""Hand-derived ("fused") vs composed (from primitives) layers: forward + backward time and peak memory.

For attention, RMSNorm, LayerNorm, cross-entropy (and SwiGLU, RoPE) at a GPT-sized shape
(B=16, T=256, C=384, nh=6, hs=64; cross-entropy over V=65 and V=512), the same inputs go
through `F.<layer>(...)` (the hand-derived Function) and `F.<layer>(..., composed=True)`,
forward then backward. Both run in
one process, alternating, best of N, so drift on a shared machine cancels. Peak memory is
what tracemalloc sees NumPy allocate during one forward + backward (inputs excluded,
outputs, saved tensors and gradients included), measured in separate runs so tracing does
not slow the timed ones.

    python bench/layers_fused_vs_composed.py [--repeats 5] [--threads 2] [--dtype float32]
                                             [--B 16 --T 256 --C 384 --nh 6]

Goal (issue 4): every hand-derived path faster (time ratio composed/derived > 1) and using no
more memory (memory ratio composed/derived >= 1). Exit status 1 when a goal is missed.
CPU only: tracemalloc does not see GPU memory.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    p.add_argument("--B", type=int, default=16)
    p.add_argument("--T", type=int, default=256)
    p.add_argument("--C", type=int, default=384)
    p.add_argument("--nh", type=int, default=6)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))

    import numpy as np

    from autograd import Tensor
    from autograd import functional as F

    if args.C % args.nh:
        p.error(f"--C {args.C} is not divisible by --nh {args.nh}")
    rng = np.random.default_rng(args.seed)
    dtype = np.dtype(args.dtype)
    B, T, C, nh = args.B, args.T, args.C, args.nh
    hs = C // nh

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    x_btc = normal(B, T, C)                      # (B, T, C)
    weight, bias = 1 + 0.1 * normal(C), 0.1 * normal(C)
    q, k, v = normal(B, nh, T, hs), normal(B, nh, T, hs), normal(B, nh, T, hs)   # (B, nh, T, hs)
    cases = [  # (name, shape text, fn(composed, *tensors), arrays, indices of differentiated arrays)
        ("attention (causal)", f"B={B} nh={nh} T={T} hs={hs}",
         lambda composed, q, k, v: F.scaled_dot_product_attention(q, k, v, causal=True, composed=composed), [q, k, v]),
        ("rms_norm", f"({B}, {T}, {C})", lambda composed, x, w: F.rms_norm(x, w, composed=composed), [x_btc, weight]),
        ("layer_norm", f"({B}, {T}, {C})", lambda composed, x, w, b: F.layer_norm(x, w, b, composed=composed),
         [x_btc, weight, bias]),
    ]
    for V in (65, 512):
        logits = normal(B * T, V)                # (B*T, V)
        targets = rng.integers(0, V, size=B * T)
        cases.append((f"cross_entropy V={V}", f"({B * T}, {V})",
                      lambda composed, x, targets=targets: F.cross_entropy(x, targets, composed=composed), [logits]))
    cases.append(("swiglu", f"({B}, {T}, {4 * C})", lambda composed, a, u: F.swiglu(a, u, composed=composed),
                  [normal(B, T, 4 * C), normal(B, T, 4 * C)]))
    cases.append(("rope", f"B={B} nh={nh} T={T} hs={hs}", lambda composed, x: F.rope(x, composed=composed), [q]))

    def step(fn, composed, arrays, grad_output):
        tensors = [Tensor(a, requires_grad=True) for a in arrays]
        y = fn(composed, *tensors)
        y.backward(grad_output)
        return [t.grad for t in tensors]

    def timed(fn, composed, arrays, grad_output):
        start = time.perf_counter()
        step(fn, composed, arrays, grad_output)
        return time.perf_counter() - start

    def peak_bytes(fn, composed, arrays, grad_output):
        tracemalloc.start()
        tracemalloc.reset_peak()
        grads = step(fn, composed, arrays, grad_output)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        del grads
        return peak

    print(f"hand-derived vs composed forward+backward, {dtype}, best of {args.repeats}, "
          f"{os.environ['OMP_NUM_THREADS']} BLAS threads, numpy {np.__version__}")
    header = (f"{'layer':<22} {'shape':<26} {'deriv. ms':>9} {'comp. ms':>9} {'speedup':>8} "
              f"{'deriv. MiB':>10} {'comp. MiB':>10} {'mem ratio':>9}  ok")
    print(header)
    print("-" * len(header))
    all_ok = True
    for name, shape, fn, arrays in cases:
        y = fn(False, *[Tensor(a) for a in arrays])
        grad_output = None if y.size == 1 else normal(*y.shape)
        step(fn, False, arrays, grad_output)     # warm caches (RoPE tables, allocator)
        step(fn, True, arrays, grad_output)
        best = {False: float("inf"), True: float("inf")}   # composed -> best seconds
        for _ in range(args.repeats):
            for composed in (False, True):
                best[composed] = min(best[composed], timed(fn, composed, arrays, grad_output))
        mem = {composed: peak_bytes(fn, composed, arrays, grad_output) for composed in (False, True)}
        speedup = best[True] / best[False]
        mem_ratio = mem[True] / mem[False]
        ok = speedup > 1.0 and mem_ratio >= 1.0
        all_ok &= ok
        print(f"{name:<22} {shape:<26} {best[False] * 1e3:9.2f} {best[True] * 1e3:9.2f} {speedup:7.2f}x "
              f"{mem[False] / 2**20:10.1f} {mem[True] / 2**20:10.1f} {mem_ratio:8.2f}x  {'yes' if ok else 'NO'}")
    print("speedup = composed time / hand-derived time; mem ratio = composed peak / hand-derived peak "
          "(>= 1: the hand-derived layer uses no more)")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
