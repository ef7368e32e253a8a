"""Drawing the graph: autograd.to_dot (and Tensor.to_dot), constants with values, names, a warning
after backward, and draw_graph: DOT text, SVG through Graphviz, a clear message without it."""
import shutil
import warnings

import numpy as np
import pytest

import autograd as ag
from autograd import Tensor, graph


def small_graph():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True, name="x")
    w = Tensor(np.ones((2, 2)), requires_grad=True)
    y = (ag.tanh(x @ w) * 2.0).sum()
    return x, w, y


def test_to_dot_is_exported_and_equals_the_method():
    _, w, y = small_graph()
    text = ag.to_dot(y, names={"w": w})
    assert text == y.to_dot(names={"w": w})
    assert text.startswith("digraph autograd {") and text.endswith("}\n")
    for op in ("MatMul", "Tanh", "Mul", "Sum"):
        assert f'label="{op}"' in text
    assert r'label="x\n(2,) float64"' in text and r'label="w\n(2, 2) float64"' in text


def test_constants_show_their_values_and_large_ones_their_shape():
    x = Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * 2.0 + Tensor(np.array([0.5, -1.0]))) * Tensor(np.zeros((3, 4, 1)))
    text = ag.to_dot(y)
    assert r'label="2\n() float64"' in text
    assert r'label="[0.5, -1]\n(2,) float64"' in text
    assert r'label="constant\n(3, 4, 1) float64"' in text


def test_drawing_after_backward_warns_that_the_graph_was_freed():
    _, _, y = small_graph()
    before = ag.to_dot(y)
    y.backward()
    with pytest.warns(RuntimeWarning, match=r"freed by backward\(\).*retain_graph=True"):
        after = y.to_dot()
    assert after.count("[shape=box") == 1 and before.count("[shape=box") > 1
    _, _, z = small_graph()
    z.backward(retain_graph=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ag.to_dot(z) == before


def test_draw_graph_writes_dot_text_without_graphviz(tmp_path, monkeypatch):
    _, _, y = small_graph()
    monkeypatch.setattr(graph.shutil, "which", lambda name: None)
    path = ag.draw_graph(y, tmp_path / "g.dot")
    assert path.read_text() == ag.to_dot(y)
    with pytest.raises(RuntimeError, match=r"needs Graphviz's `dot` program.*apt-get install graphviz.*g\.dot"):
        ag.draw_graph(y, tmp_path / "g.svg")
    assert not (tmp_path / "g.svg").exists()


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_draw_graph_renders_svg_with_graphviz(tmp_path):
    _, _, y = small_graph()
    path = ag.draw_graph(y, tmp_path / "g.svg")
    svg = path.read_text()
    assert "<svg" in svg and "MatMul" in svg
