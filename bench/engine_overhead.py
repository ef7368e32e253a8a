"""Engine overhead: forward + backward of an op chain through autograd vs the same math in plain NumPy.

The chain is k layers of h = tanh(h @ W + b) followed by mean(h * h). The NumPy version
does the same forward and a hand-written backward with no graph at all, so the ratio
autograd / NumPy is what the engine costs on top of the arithmetic. Both run in the same
process, alternating, best of N, so drift on a shared machine cancels.

    python bench/engine_overhead.py [--repeats 20] [--threads 2]
Goals (issue 3): <= 1.3x at 1024x1024, <= 3x at 128x128.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))

    import numpy as np

    import autograd as ag
    from autograd import Tensor

    def numpy_step(x, Ws, bs):
        hs = [x]
        for W, b in zip(Ws, bs):
            hs.append(np.tanh(hs[-1] @ W + b))
        h = hs[-1]
        loss = (h * h).mean()
        dh = 2 * h / h.size
        dWs, dbs = [], []
        for i in reversed(range(len(Ws))):
            dpre = dh * (1 - hs[i + 1] * hs[i + 1])
            dWs.append(hs[i].T @ dpre)
            dbs.append(dpre.sum(axis=0))
            dh = dpre @ Ws[i].T
        return loss, dWs, dbs

    def autograd_step(x, Ws, bs):
        h = Tensor(x)
        for W, b in zip(Ws, bs):
            h = ag.tanh(h @ W + b)
        loss = (h * h).mean()
        loss.backward()
        grads = [W.grad for W in Ws]
        for t in Ws + bs:
            t.grad = None
        return loss.item(), grads

    print(f"{'size':>10} {'numpy ms':>10} {'autograd ms':>12} {'ratio':>7} {'goal':>6}")
    for n, goal in ((128, 3.0), (1024, 1.3)):
        rng = np.random.default_rng(0)
        x = rng.standard_normal((n, n)).astype(np.float32)
        Ws_np = [(rng.standard_normal((n, n)) / np.sqrt(n)).astype(np.float32) for _ in range(args.layers)]
        bs_np = [np.zeros(n, np.float32) for _ in range(args.layers)]
        Ws = [Tensor(W, requires_grad=True) for W in Ws_np]
        bs = [Tensor(b, requires_grad=True) for b in bs_np]
        l_np, dW_np, _ = numpy_step(x, Ws_np, bs_np)
        l_ag, dW_ag = autograd_step(x, Ws, bs)
        np.testing.assert_allclose(l_ag, l_np, rtol=1e-5)
        np.testing.assert_allclose(dW_ag[0], dW_np[-1], rtol=1e-3, atol=1e-6)
        t_np, t_ag = [], []
        reps = args.repeats if n <= 256 else max(3, args.repeats // 4)
        for _ in range(reps):
            t0 = time.perf_counter(); numpy_step(x, Ws_np, bs_np); t_np.append(time.perf_counter() - t0)
            t0 = time.perf_counter(); autograd_step(x, Ws, bs); t_ag.append(time.perf_counter() - t0)
        best_np, best_ag = min(t_np), min(t_ag)
        ratio = best_ag / best_np
        print(f"{n:>5}x{n:<4} {best_np * 1e3:>10.3f} {best_ag * 1e3:>12.3f} {ratio:>6.2f}x {'<=' + str(goal):>6}"
              f"  {'ok' if ratio <= goal else 'MISSED'}")


if __name__ == "__main__":
    main()
