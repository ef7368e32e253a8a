"""Draw the graph behind a tensor: Graphviz DOT text, and SVG (or PNG, PDF) through Graphviz's `dot`.

    import autograd
    loss = (autograd.tanh(x @ w) * 2).sum()
    text = autograd.to_dot(loss, names={"x": x, "w": w})      # or loss.to_dot(); no Graphviz needed
    autograd.draw_graph(loss, "graph.svg", names=dict(model.named_parameters()))   # runs `dot -Tsvg`

Boxes are tensors: the output filled, leaves that require grad in bold (labelled with
their `name=` or the name given in `names`), constants dashed and showing their values
when they have a few. Ellipses are Functions. Arrows point the way the forward pass ran.
Draw before `backward()`: backward frees the graph as it goes (unless retain_graph=True),
and a freed graph is drawn as the tensor alone, with a warning that says so.

Left out: the Functions' keyword settings (axis, eps: they are not kept after forward),
the gradients' values, interactive viewers.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

from . import backend

CONSTANT_VALUES_SHOWN = 6   # a constant with at most this many elements shows its values


def to_dot(tensor, names=None) -> str:
    """The graph that produced `tensor` as Graphviz DOT text (deterministic: nodes numbered in visiting order).

    names: {name: tensor} or (name, tensor) pairs (e.g. model.named_parameters()) to label
    tensors that have no `name=` of their own.
    """
    labels = _names_by_id(names)
    order = _tensors_in_graph(tensor)
    node = {id(t): f"t{i}" for i, t in enumerate(order)}
    lines = ["digraph autograd {", "  rankdir=BT;", '  node [fontname="Helvetica", fontsize=10];']
    for i, t in enumerate(order):
        lines.append(f"  t{i} [shape=box, {_tensor_style(t, tensor)}, label={_quote(_tensor_label(t, labels))}];")
        if t.grad_fn is not None:          # one output per Function: f<i> is the Function that made t<i>
            lines.append(f"  f{i} [shape=ellipse, label={_quote(t.grad_fn.name)}];")
            lines.append(f"  f{i} -> t{i};")
            lines.extend(f"  {node[id(inp)]} -> f{i};" for inp in t.grad_fn.inputs)
    freed = sum(t.graph_freed for t in order)
    if freed:
        warnings.warn(f"to_dot: the graph behind {freed} tensor(s) here was freed by backward(), so only the "
                      "tensor itself is drawn there; draw before backward(), or call backward(retain_graph=True)",
                      RuntimeWarning, stacklevel=_stacklevel_outside_autograd())
    lines.append("}")
    return "\n".join(lines) + "\n"


def _tensors_in_graph(root) -> list:
    """Every tensor reachable from root through grad_fn.inputs, root first, inputs in argument order."""
    order, seen, stack = [], set(), [root]
    while stack:
        t = stack.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        order.append(t)
        if t.grad_fn is not None:
            stack.extend(reversed(t.grad_fn.inputs))
    return order


def draw_graph(tensor, path, names=None) -> Path:
    """Write the graph behind `tensor` to `path`: DOT text for a .dot file, else rendered by Graphviz's
    `dot` in the format of the suffix (.svg, .png, .pdf). Returns the path."""
    path = Path(path)
    fmt = path.suffix.lstrip(".").lower() or "svg"
    text = to_dot(tensor, names=names)
    if fmt in ("dot", "gv"):
        path.write_text(text, encoding="utf-8")
        return path
    program = shutil.which("dot")
    if program is None:
        raise RuntimeError(
            f"draw_graph: rendering {path.name} needs Graphviz's `dot` program, which is not on PATH. "
            "Install Graphviz (apt-get install graphviz, brew install graphviz or conda install graphviz), "
            f"or write the DOT text instead, draw_graph(tensor, '{path.with_suffix('.dot').name}') or "
            "autograd.to_dot(tensor), and render it with any Graphviz viewer")
    done = subprocess.run([program, f"-T{fmt}", "-o", str(path)], input=text, text=True,
                          capture_output=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"draw_graph: `dot -T{fmt}` failed (exit {done.returncode}): {done.stderr.strip()}")
    return path


def _stacklevel_outside_autograd() -> int:
    """The warnings stacklevel of the first caller outside autograd/, so a warning points at the user's line."""
    package = os.path.dirname(os.path.abspath(__file__))
    level, frame = 1, sys._getframe(1)
    while frame is not None and os.path.dirname(os.path.abspath(frame.f_code.co_filename)) == package:
        level, frame = level + 1, frame.f_back
    return level


def _names_by_id(names) -> dict:
    if names is None:
        return {}
    pairs = names.items() if isinstance(names, dict) else names
    return {id(t): name for name, t in pairs}


def _tensor_style(t, root) -> str:
    if t is root:
        return 'style=filled, fillcolor="#dde8f5"'
    if t.grad_fn is None and t.requires_grad:
        return "style=bold"
    if not t.requires_grad:
        return "style=dashed"
    return "style=solid"


def _tensor_label(t, labels: dict) -> str:
    name = t.name or labels.get(id(t))
    facts = f"{tuple(t.shape)} {t.dtype}"
    if t.requires_grad:
        return f"{name}\n{facts}" if name else facts
    if t.data.size <= CONSTANT_VALUES_SHOWN:
        flat = ", ".join(f"{v:.4g}" for v in backend.to_numpy(t.data).reshape(-1).tolist())
        values = flat if t.ndim == 0 else f"[{flat}]"
        return f"{name + ' = ' if name else ''}{values}\n{facts}"
    return f"{name + ' ' if name else ''}constant\n{facts}"


def _quote(text: str) -> str:
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
