"""`tinyllm gradcheck` through its register/run pair: named ops, all ops, --model, a failing op, bad names."""
import argparse
import io

import numpy as np

from tinyllm.commands import gradcheck


def _run(argv, capsys=None):
    parser = argparse.ArgumentParser(prog="tinyllm")
    gradcheck.register(parser.add_subparsers())
    args = parser.parse_args(["gradcheck", *argv])
    out = io.StringIO()
    status = args.handler(args, out=out)
    assert args.func is args.handler
    return status, out.getvalue()


def test_named_ops_print_a_row_each_and_pass():
    status, text = _run(["attention", "rms_norm", "--seed", "3"])
    assert status == 0
    lines = text.splitlines()
    assert lines[0].split()[:2] == ["op", "shape"]
    rows = {line.split()[0]: line for line in lines[1:-1]}
    assert set(rows) == {"attention", "rms_norm"}
    assert rows["rms_norm"].rstrip().endswith("pass") and "2x3x6 6" in rows["rms_norm"]
    assert "all 2 checks passed" in lines[-1]


def test_every_op_and_the_model_pass():
    status, text = _run(["--model"])
    assert status == 0, text
    names = [line.split()[0] for line in text.splitlines()[1:-1]]
    for expected in ("add", "matmul", "softmax", "cross_entropy", "layer_norm", "rope", "swiglu",
                     "attention_gqa_kv_cache", "model_gpt2.wte.weight", "model_llama.lm_head.weight"):
        assert expected in names


def test_a_wrong_backward_fails_with_status_1(monkeypatch):
    from autograd import Function

    class WrongSquare(Function):
        def forward(self, x):
            self.x = x
            return x * x

        def backward(self, grad):
            return grad * self.x          # missing the factor 2

    checks = {"wrong_square": gradcheck.OpCheck("wrong_square", WrongSquare.apply,
                                                lambda rng: [rng.standard_normal((2, 2))])}
    monkeypatch.setattr(gradcheck, "op_checks", lambda device="cpu": checks)
    status, text = _run(["wrong_square"])
    assert status == 1
    assert "FAIL" in text and "FAILED: wrong_square" in text


def test_unknown_op_lists_the_valid_names(capsys):
    status, _ = _run(["attention", "attentoin"])
    assert status == 2
    err = capsys.readouterr().err
    assert "unknown op(s) 'attentoin'" in err and "layer_norm" in err and "rope" in err


def test_checks_are_deterministic_by_seed():
    a = _run(["layer_norm", "--seed", "5"])[1]
    b = _run(["layer_norm", "--seed", "5"])[1]
    assert a == b and np.isfinite(float(a.splitlines()[1].split()[-3]))
