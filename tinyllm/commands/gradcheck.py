"""`tinyllm gradcheck`: every op's and layer's backward against float64 central differences.

    tinyllm gradcheck                      # every primitive and layer
    tinyllm gradcheck attention rope       # just these
    tinyllm gradcheck --model --seed 3     # also a whole tiny GPT (both families) on sampled parameters
    tinyllm gradcheck --device cuda        # the same checks with every array on the GPU

Each check runs `autograd.gradcheck.check_backward` in float64 on small random inputs
(seeded) through the hand-derived path of the op (not `composed=True`), and prints one row:
op, input shapes, the largest absolute and relative error, pass or FAIL. The exit status is 1 when any check
fails, 2 for an unknown op name (the message lists the valid ones).

`--model` builds two tiny GPTs in float64 (GPT-2 style: LayerNorm, GELU, learned positions,
tied head; Llama style: RMSNorm, SwiGLU, RoPE, grouped-query heads), runs forward and
backward on random tokens, and compares the gradient of the loss with central differences
for a random sample of parameter elements (a few from every parameter tensor).

`--device cuda` runs every check with the inputs, constants and model on the GPU (float64
there too), so the hand-derived backward is checked as CuPy computes it.

Left out: float32 checks (finite differences there are only good to ~1e-3).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from tinyllm.commands.common import add_command

EXAMPLES = """\
tinyllm gradcheck
tinyllm gradcheck attention layer_norm rms_norm rope swiglu cross_entropy
tinyllm gradcheck --model --seed 1
tinyllm gradcheck --device cuda"""

# float64 finite differences: |analytic - numeric| <= ATOL + RTOL |numeric|
EPS, ATOL, RTOL = 1e-6, 1e-7, 1e-5


@dataclass(frozen=True)
class OpCheck:
    """One gradient check: fn(*tensors) -> Tensor on inputs made by make_inputs(rng)."""
    name: str
    fn: object
    make_inputs: object


def op_checks(device: str = "cpu") -> dict:
    """name -> OpCheck for every primitive (autograd.ops) and layer (autograd.functional); the
    constants inside the checks (masks, ids, a dropout generator) live on `device`."""
    import autograd as ag  # noqa: PLC0415 - the command imports the engine on use
    from autograd import backend  # noqa: PLC0415
    from autograd import functional as F  # noqa: PLC0415

    def const(array):
        return backend.to_device(np.asarray(array), device)

    def normal(*shape):
        return lambda rng: rng.standard_normal(shape)

    def away_from_zero(*shape):   # for kinks (relu, abs) and poles (log, sqrt, div)
        return lambda rng: (0.3 + rng.random(shape)) * rng.choice([-1.0, 1.0], size=shape)

    def distinct(*shape):         # max/maximum need a unique winner
        return lambda rng: rng.permutation(int(np.prod(shape))).reshape(shape) * 0.1 + 0.01 * rng.random(shape)

    def several(*makers):
        return lambda rng: [m(rng) for m in makers]

    def ids(high, *shape):
        return lambda rng: rng.integers(0, high, size=shape)

    mask_2x3 = const([[True, False, True], [False, False, True]])
    pad_mask = const(np.array([True, True, True, False, False]).reshape(1, 1, 1, 5))
    checks = [
        OpCheck("add", lambda a, b: a + b, several(normal(2, 3), normal(3))),
        OpCheck("sub", lambda a, b: a - b, several(normal(2, 1), normal(3))),
        OpCheck("mul", lambda a, b: a * b, several(normal(2, 3), normal(2, 1))),
        OpCheck("div", lambda a, b: a / b, several(normal(2, 3), away_from_zero(3))),
        OpCheck("neg", lambda a: -a, several(normal(2, 3))),
        OpCheck("pow", lambda a: a ** 3, several(normal(2, 3))),
        OpCheck("exp", ag.exp, several(normal(2, 3))),
        OpCheck("log", lambda a: ag.log(a * a), several(away_from_zero(2, 3))),
        OpCheck("sqrt", lambda a: ag.sqrt(a * a), several(away_from_zero(2, 3))),
        OpCheck("tanh", ag.tanh, several(normal(2, 3))),
        OpCheck("sigmoid", ag.sigmoid, several(normal(2, 3))),
        OpCheck("relu", ag.relu, several(away_from_zero(2, 3))),
        OpCheck("abs", ag.abs, several(away_from_zero(2, 3))),
        OpCheck("maximum", ag.maximum, several(distinct(2, 3), lambda rng: rng.standard_normal((2, 3)) + 0.05)),
        OpCheck("where", lambda a, b: ag.where(mask_2x3, a, b), several(normal(2, 3), normal(3))),
        OpCheck("masked_fill", lambda a: ag.masked_fill(a, mask_2x3, -1.0), several(normal(2, 3))),
        OpCheck("sum", lambda a: a.sum(axis=1), several(normal(2, 3, 4))),
        OpCheck("mean", lambda a: a.mean(axis=(0, 2), keepdims=True), several(normal(2, 3, 4))),
        OpCheck("max", lambda a: a.max(axis=-1), several(distinct(2, 3, 4))),
        OpCheck("var", lambda a: a.var(axis=-1, ddof=1), several(normal(2, 5))),
        OpCheck("reshape", lambda a: a.reshape(3, 4) * ag.Tensor(const(np.arange(12.0).reshape(3, 4))),
                several(normal(2, 6))),
        OpCheck("permute", lambda a: a.permute(2, 0, 1), several(normal(2, 3, 4))),
        OpCheck("expand", lambda a: a.expand(2, 3, 4), several(normal(3, 1))),
        OpCheck("getitem", lambda a: a[1:, ::2], several(normal(3, 4))),
        OpCheck("getitem_repeated", lambda a: a[const([0, 2, 0, 0])], several(normal(3, 2))),
        OpCheck("concatenate", lambda a, b: ag.concatenate([a, b], axis=1), several(normal(2, 3), normal(2, 1))),
        OpCheck("stack", lambda a, b: ag.stack([a, b], axis=0), several(normal(2, 3), normal(2, 3))),
        OpCheck("matmul", ag.matmul, several(normal(2, 3, 4), normal(4, 5))),
        OpCheck("matmul_batched", ag.matmul, several(normal(2, 1, 3, 4), normal(3, 4, 2))),
        OpCheck("softmax", lambda a: F.softmax(a, axis=-1), several(normal(3, 5))),
        OpCheck("log_softmax", lambda a: F.log_softmax(a, axis=0), several(normal(3, 5))),
        OpCheck("cross_entropy", lambda a, t: F.cross_entropy(a, t), several(normal(2, 3, 6), ids(6, 2, 3))),
        OpCheck("cross_entropy_ignore", lambda a: F.cross_entropy(a, np.array([1, -100, 4, 0]), reduction="sum"),
                several(normal(4, 6))),
        OpCheck("gelu", F.gelu, several(normal(2, 5))),
        OpCheck("gelu_erf", lambda a: F.gelu(a, approximate="none"), several(normal(2, 5))),
        OpCheck("silu", F.silu, several(normal(2, 5))),
        OpCheck("swiglu", F.swiglu, several(normal(2, 5), normal(2, 5))),
        OpCheck("dropout", lambda a: F.dropout(a, 0.3, generator=backend.new_generator(0, device)),
                several(normal(3, 5))),
        OpCheck("embedding", lambda w: F.embedding(np.array([[1, 3, 1], [0, 1, 2]]), w), several(normal(4, 3))),
        OpCheck("linear", F.linear, several(normal(2, 3, 4), normal(5, 4), normal(5))),
        OpCheck("layer_norm", F.layer_norm, several(normal(2, 3, 6), normal(6), normal(6))),
        OpCheck("rms_norm", F.rms_norm, several(normal(2, 3, 6), normal(6))),
        OpCheck("rope", lambda x: F.rope(x, offset=2), several(normal(2, 2, 4, 6))),
        OpCheck("attention", F.scaled_dot_product_attention, several(normal(2, 2, 4, 3), normal(2, 2, 4, 3),
                                                                     normal(2, 2, 4, 3))),
        OpCheck("attention_gqa_kv_cache", F.scaled_dot_product_attention,
                several(normal(1, 4, 2, 3), normal(1, 2, 5, 3), normal(1, 2, 5, 3))),
        OpCheck("attention_mask_dropout",
                lambda q, k, v: F.scaled_dot_product_attention(q, k, v, causal=False, mask=pad_mask, dropout_p=0.2,
                                                               generator=backend.new_generator(0, device)),
                several(normal(1, 2, 3, 4), normal(1, 2, 5, 4), normal(1, 2, 5, 4))),
    ]
    return {c.name: c for c in checks}


def register(subparsers) -> None:
    parser = add_command(subparsers, "gradcheck", "check every op's backward against finite differences",
                         "Run check_backward in float64 on every op and layer (or the named ones) and print a "
                         "table; exit status 1 on any failure.", EXAMPLES)
    parser.add_argument("ops", nargs="*", metavar="OP", help="ops to check (default: all; see the table for names)")
    parser.add_argument("--model", action="store_true",
                        help="also check a whole tiny GPT's gradients (both families) on sampled parameters")
    parser.add_argument("--seed", type=int, default=0, help="seed for the random inputs and the parameter sample")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                        help="where the checks run (cuda: CuPy on the GPU)")
    parser.set_defaults(handler=run, func=run)


def run(args, out=None) -> int:
    out = out or sys.stdout
    device = getattr(args, "device", "cpu")
    checks = op_checks(device)
    unknown = [name for name in args.ops if name not in checks]
    if unknown:
        print(f"tinyllm gradcheck: unknown op(s) {', '.join(repr(n) for n in unknown)}; "
              f"valid names: {', '.join(checks)}", file=sys.stderr)
        return 2
    rows = [check_op(checks[name], args.seed, device) for name in (args.ops or checks)]
    if args.model:
        rows += _check_models(args.seed, device)
    _print_table(rows, out)
    failed = [row[0] for row in rows if not row[4]]
    if failed:
        print(f"FAILED: {', '.join(failed)}", file=out)
        return 1
    print(f"all {len(rows)} checks passed (float64 on {device}, eps={EPS:g}, atol={ATOL:g}, rtol={RTOL:g})", file=out)
    return 0


def check_op(check: OpCheck, seed: int, device: str = "cpu"):
    """(name, shapes, max abs err, max rel err, passed, note) for one op, its inputs on `device`."""
    from autograd import Tensor  # noqa: PLC0415
    from autograd.gradcheck import check_backward  # noqa: PLC0415

    rng = np.random.default_rng(seed)
    inputs = check.make_inputs(rng)
    shapes = " ".join("x".join(map(str, np.shape(a))) or "()" for a in inputs)
    if device != "cpu":   # floating inputs are differentiated, integer ones (ids, targets) are constants
        inputs = [Tensor(a, requires_grad=np.issubdtype(np.asarray(a).dtype, np.floating), device=device)
                  for a in inputs]
    try:
        result = check_backward(check.fn, inputs, eps=EPS, atol=ATOL, rtol=RTOL, seed=seed, raise_on_failure=False)
    except Exception as error:  # a crash is a failure of that op, reported in its row
        return (check.name, shapes, float("nan"), float("nan"), False, f"{type(error).__name__}: {error}")
    return (check.name, shapes, result.max_abs_err, result.max_rel_err, result.passed, result.mode)


def _model_configs():
    from tinyllm.model import GPTConfig  # noqa: PLC0415 - the model is only needed for --model

    return {
        "model_gpt2": GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=8, mlp_hidden=12),
        "model_llama": GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=4, n_kv_head=2, n_embd=8,
                                 mlp_hidden=12, norm="rmsnorm", mlp="swiglu", position="rope", bias=False,
                                 tie_embeddings=False),
    }


def _check_models(seed: int, device: str = "cpu", per_tensor: int = 3, B: int = 2, T: int = 6) -> list:
    """One row per (model, parameter tensor): its sampled elements against central differences."""
    from autograd import backend, no_grad  # noqa: PLC0415
    from tinyllm.model import GPT  # noqa: PLC0415

    rows = []
    for name, config in _model_configs().items():
        rng = np.random.default_rng(seed)
        model = GPT(config, seed=seed, dtype="float64", device=device)
        idx = rng.integers(0, config.vocab_size, size=(B, T))
        targets = rng.integers(0, config.vocab_size, size=(B, T))
        _, loss = model(idx, targets)
        loss.backward()

        def loss_value() -> float:
            with no_grad():
                return float(model(idx, targets)[1].item())

        for pname, param in model.named_parameters():
            flat = param.data.reshape(-1)          # a view: perturb in place, restore after
            grad = backend.to_numpy(param.grad).reshape(-1)
            picks = rng.choice(flat.size, size=min(per_tensor, flat.size), replace=False)
            abs_err = rel_err = 0.0
            passed = True
            for j in picks:
                original = flat[j].copy()          # CuPy's flat[j] is a view: keep the value, not the view
                flat[j] = original + EPS
                plus = loss_value()
                flat[j] = original - EPS
                minus = loss_value()
                flat[j] = original
                numeric = (plus - minus) / (2 * EPS)
                err = abs(float(grad[j]) - numeric)
                abs_err = max(abs_err, err)
                rel_err = max(rel_err, err / max(abs(numeric), ATOL))
                passed &= err <= ATOL + RTOL * abs(numeric)
            rows.append((f"{name}.{pname}", "x".join(map(str, param.shape)), abs_err, rel_err, passed,
                         f"{len(picks)} elements"))
    return rows


def _print_table(rows, out) -> None:
    width = max([len("op")] + [len(r[0]) for r in rows])
    shape_width = max([len("shape")] + [len(r[1]) for r in rows])
    print(f"{'op':<{width}}  {'shape':<{shape_width}}  {'max abs err':>11}  {'max rel err':>11}  result", file=out)
    for name, shapes, abs_err, rel_err, passed, note in rows:
        verdict = "pass" if passed else f"FAIL ({note})"
        print(f"{name:<{width}}  {shapes:<{shape_width}}  {abs_err:11.2e}  {rel_err:11.2e}  {verdict}", file=out)
