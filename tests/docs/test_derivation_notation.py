"""The derivation pages keep their own rules, and the code its pages' names (docs/derivations/README.md):
g is the upstream gradient only, every symbol is defined before it is used, a term means one
part of the backward in every form, a stated precision is the true one, and a worked example
can tell a right formula from a plausible wrong one."""
import ast
import re
from pathlib import Path

import numpy as np

from autograd import Tensor
from autograd import functional as F

ROOT = Path(__file__).resolve().parents[2]
PAGES = ROOT / "docs" / "derivations"


def page(name: str) -> str:
    return (PAGES / name).read_text(encoding="utf-8")


def matrix(text: str, name: str) -> np.ndarray:
    """The 2x2 matrix `name = \\begin{pmatrix} a & b \\\\ c & d \\end{pmatrix}` of a page's worked example."""
    found = re.search(name + r" = \\begin\{pmatrix\} (.*?) \\end\{pmatrix\}", text)
    rows = [[float(v) for v in row.split("&")] for row in found.group(1).split(r"\\")]
    return np.array(rows)


def test_attention_worked_example_tells_k_from_its_transpose():
    """With K = I (as once) a backward that used K^T where K belongs got the page's numbers right."""
    text = page("attention.md")
    Q, K, V, g = (matrix(text, name) for name in ("Q", "K", "V", "g"))
    q, k, v = (Tensor(a[None, None], requires_grad=True) for a in (Q, K, V))
    F.scaled_dot_product_attention(q, k, v).backward(g[None, None])
    qt, kt, vt = (Tensor(a[None, None], requires_grad=True) for a in (Q, K.T, V))
    F.scaled_dot_product_attention(qt, kt, vt).backward(g[None, None])
    assert not np.allclose(q.grad, qt.grad)


def test_rms_norm_states_the_decimal_the_default_eps_changes():
    said = re.search(r"changes the results below in the\s+(\w+)\s+decimal", page("rms_norm.md")).group(1)
    x, w = np.array([0.0, 2.0, 4.0, 4.0]), np.array([1.0, 3.0, 1.0, 1.0])
    exact = x / np.sqrt((x * x).mean()) * w
    with_eps = F.rms_norm(Tensor(x), Tensor(w)).data                    # the default eps = 1e-6
    first_changed = int(np.floor(-np.log10(np.abs(with_eps - exact).max()))) + 1
    assert said == ["first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth"][first_changed - 1]


def test_g_is_the_upstream_gradient_only_on_the_cross_entropy_page():
    text = page("cross_entropy.md")
    assert "g_n" not in text.replace("d\\ell_n = g_n", "")     # g_n only as the n-th entry of g ("none")
    assert "m_n = \\max_j x_{n,j}" in text                      # the local maximum is a row's
    source = (ROOT / "autograd" / "layers" / "cross_entropy.py").read_text(encoding="utf-8")
    assert "* g_n" not in source and "dl_n" in source


def test_rope_defines_g_tilde_and_term_2_is_one_signed_part_in_both_forms():
    text = page("rope.md")
    assert text.index("\\tilde g = (g^{(2)}, g^{(1)})") < text.index("\\tilde g \\odot s^{\\mp}")
    final = text[text.index("## Final expressions"):text.index("## Properties")]
    assert "- \\underbrace" not in final                         # terms are added, sign inside, in every form
    forward = final[final.index("$$y ="):final.index("dx =", final.index("$$y ="))]
    assert "term" not in forward                                 # the forward has no term numbers


def test_attention_code_uses_the_pages_names():
    """n_rep query heads per kv head and Tk keys, as docs/derivations/README.md's table says."""
    tree = ast.parse((ROOT / "autograd" / "layers" / "attention.py").read_text(encoding="utf-8"))
    names = {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)}
    names |= {node.arg for node in ast.walk(tree) if isinstance(node, ast.arg)}
    assert {"n_rep", "Tk"} <= names and not {"g", "S", "gT"} & names
    table = page("README.md")
    assert "| `n_rep` |" in table and "| `Tk` |" in table
