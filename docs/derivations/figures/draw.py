"""Draw the figures of docs/derivations/ as SVG files, with plain Python (no dependency).

    python docs/derivations/figures/draw.py             # rewrites the .svg files beside this script
    python docs/derivations/figures/draw.py --out DIR   # writes them into DIR instead

Each figure is one function that returns the SVG text; the output is deterministic, so the
committed files are exactly what this script draws (tests/docs/test_derivation_figures.py
checks that). Figures and the pages that show them:

    norm_projection.svg     layer_norm.md, rms_norm.md: the backward as a projection
    rope_rotation.svg       rope.md: the (i, i + hs/2) pairs and one pair's rotation
    attention_dataflow.svg  attention.md: the forward chain and the backward terms 1-4
    gqa_reshape.svg         attention.md: query heads grouped per kv head, without copies
    causal_blocks.svg       attention.md: the causal block staircase

Left out: anything a figure does not need (no plotting library, no layout engine): each
figure places its shapes by hand, in pixels.
"""
from __future__ import annotations

import argparse
import math
from pathlib import Path

SANS = "DejaVu Sans, Helvetica, Arial, sans-serif"
SERIF = "DejaVu Serif, Times New Roman, serif"

# Colours (the same meaning in every figure where they appear).
INK = "#222222"
GREY = "#888888"
LIGHT = "#dddddd"
BLUE = "#1f6fb4"      # forward quantities
ORANGE = "#d9730d"    # upstream gradient g
GREEN = "#2e8b57"     # the resulting input gradient
RED = "#c0392b"       # removed components / terms
PURPLE = "#7b4ea3"

XHAT = "x\u0302"      # x with a circumflex
PTILDE = "P\u0303"    # P with a tilde
TRANSPOSE = "\u1d40"  # superscript T
ODOT = "\u2299"
MINUS = "\u2212"
N_H, N_KV, N_REP = "n\u2095", "n\u2096\u1d65", "n\u1d63\u2091\u209a"   # n_h, n_kv, n_rep as subscripts
T_K, H_S = "T\u2096", "h\u209b"                                        # T_k, h_s


def sub(number: int) -> str:
    """An integer in Unicode subscript digits: sub(12) = '\u2081\u2082'."""
    return "".join(chr(0x2080 + int(d)) for d in str(number))


def esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def num(value: float) -> str:
    """A coordinate with at most one decimal, without a trailing .0 (stable, short output)."""
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


def svg(width: int, height: int, body: list, markers: tuple = ()) -> str:
    defs = "".join(
        f'<marker id="arrow-{name}" viewBox="0 0 10 10" refX="9" refY="5" markerUnits="userSpaceOnUse" '
        f'markerWidth="11" markerHeight="11" orient="auto-start-reverse">'
        f'<path d="M 0 0 L 10 5 L 0 10 z" fill="{colour}"/></marker>'
        for name, colour in markers)
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="{SANS}" font-size="13">\n'
            f'<defs>{defs}</defs>\n'
            f'<rect x="0" y="0" width="{width}" height="{height}" fill="white"/>\n'
            + "\n".join(body) + "\n</svg>\n")


def line(x1, y1, x2, y2, colour=INK, width=1.5, dash=None, arrow=None) -> str:
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    extra += f' marker-end="url(#arrow-{arrow})"' if arrow else ""
    return (f'<line x1="{num(x1)}" y1="{num(y1)}" x2="{num(x2)}" y2="{num(y2)}" '
            f'stroke="{colour}" stroke-width="{width}"{extra}/>')


def path(d: str, colour=INK, width=1.5, fill="none", dash=None, arrow=None) -> str:
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    extra += f' marker-end="url(#arrow-{arrow})"' if arrow else ""
    return f'<path d="{d}" stroke="{colour}" stroke-width="{width}" fill="{fill}"{extra}/>'


def rect(x, y, w, h, fill="white", colour=INK, width=1.2, dash=None, rx=0) -> str:
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<rect x="{num(x)}" y="{num(y)}" width="{num(w)}" height="{num(h)}" rx="{rx}" '
            f'fill="{fill}" stroke="{colour}" stroke-width="{width}"{extra}/>')


def circle(cx, cy, r, colour=INK, width=1.2, fill="none", dash=None) -> str:
    extra = f' stroke-dasharray="{dash}"' if dash else ""
    return (f'<circle cx="{num(cx)}" cy="{num(cy)}" r="{num(r)}" stroke="{colour}" '
            f'stroke-width="{width}" fill="{fill}"{extra}/>')


def text(x, y, content: str, size=13, anchor="start", colour=INK, math_font=False, weight=None) -> str:
    font = f' font-family="{SERIF}" font-style="italic"' if math_font else ""
    bold = f' font-weight="{weight}"' if weight else ""
    return (f'<text x="{num(x)}" y="{num(y)}" font-size="{size}" text-anchor="{anchor}" '
            f'fill="{colour}"{font}{bold}>{esc(content)}</text>')


def box(x, y, w, h, lines: list, fill="white", colour=INK, size=13, math_font=False) -> list:
    """A rectangle with centred lines of text."""
    out = [rect(x, y, w, h, fill=fill, colour=colour, rx=4)]
    top = y + h / 2 - (len(lines) - 1) * (size + 3) / 2 + size * 0.35
    for k, content in enumerate(lines):
        out.append(text(x + w / 2, top + k * (size + 3), content, size=size, anchor="middle",
                        math_font=math_font))
    return out


# ---- LayerNorm / RMSNorm: the backward as a projection ----------------------------------

def norm_projection() -> str:
    ox, oy = 150, 235                                  # origin
    e_rest, e_one, e_xhat = (220, 0), (0, -140), (-80, 60)   # screen directions of the three axes

    def at(a_rest, a_one, a_xhat):
        return (ox + a_rest * e_rest[0] + a_one * e_one[0] + a_xhat * e_xhat[0],
                oy + a_rest * e_rest[1] + a_one * e_one[1] + a_xhat * e_xhat[1])

    c_rest, c_one, c_xhat, r = 0.95, 0.7, 0.6, 1.4      # components of dxhat; r for the drawing
    tip = at(c_rest, c_one, c_xhat)
    after_term2 = at(c_rest, 0, c_xhat)
    rest = at(c_rest, 0, 0)
    dx_tip = at(c_rest * r, 0, 0)
    axis_rest, axis_one, axis_xhat = at(1.6, 0, 0), at(0, 1.25, 0), at(0, 0, 1.4)
    body = [
        text(20, 28, "The norm backward as a projection (one row)", size=15, weight="bold"),
        line(ox, oy, *axis_rest, colour=GREY, width=1, arrow="grey"),
        line(ox, oy, *axis_one, colour=GREY, width=1, arrow="grey"),
        line(ox, oy, *axis_xhat, colour=GREY, width=1, arrow="grey"),
        text(axis_rest[0], axis_rest[1] + 20, "the other C " + MINUS + " 2 directions", colour=GREY, anchor="end"),
        text(axis_one[0] + 8, axis_one[1] + 4, "along 1 (shifting the row)", colour=GREY),
        text(axis_xhat[0] + 6, axis_xhat[1] + 4, "along " + XHAT + " (scaling the row)", colour=GREY),
        line(ox, oy, *dx_tip, colour=GREEN, width=5, arrow="green"),
        line(ox, oy, *tip, colour=ORANGE, width=2.5, arrow="orange"),
        text(tip[0] - 10, tip[1] - 8, "d" + XHAT + " = g " + ODOT + " w", colour=ORANGE, math_font=True, size=15,
             anchor="end"),
        line(*tip, *after_term2, colour=RED, width=1.5, dash="5,4", arrow="red"),
        text(tip[0] + 8, tip[1] + 28, MINUS + " term 2", colour=RED),
        line(*after_term2, *rest, colour=RED, width=1.5, dash="5,4", arrow="red"),
        text(after_term2[0] + 30, after_term2[1] + 8, MINUS + " term 3", colour=RED),
        line(ox, oy, *rest, colour=BLUE, width=2.5, arrow="blue"),
        text(ox + 12, oy - 10, "d" + XHAT + " " + MINUS + " term 2 " + MINUS + " term 3", colour=BLUE,
             math_font=True),
        text(dx_tip[0], dx_tip[1] - 12, "dx = r (…)", colour=GREEN, math_font=True, size=15, anchor="middle"),
        circle(ox, oy, 2.5, colour=INK, fill=INK),
    ]
    legend = [
        ("LayerNorm:  dx = r (d" + XHAT + " " + MINUS + " term 2 " + MINUS + " term 3)", INK),
        ("", INK),
        ("term 2 = mean(d" + XHAT + ") 1: the part of d" + XHAT, RED),
        ("along 1; shifting the row changes nothing.", RED),
        ("term 3 = " + XHAT + " mean(d" + XHAT + " " + ODOT + " " + XHAT + "): the part", RED),
        ("along " + XHAT + " (all of it when ε = 0);", RED),
        ("scaling the row changes nothing.", RED),
        ("1 \u27c2 " + XHAT + ", because mean(" + XHAT + ") = 0.", GREY),
        ("", INK),
        ("What is left lies in the other C " + MINUS + " 2", BLUE),
        ("directions; r = 1/\u221a(σ\u00b2 + ε) scales it.", GREEN),
        ("", INK),
        ("RMSNorm:  dx = r (d" + XHAT + " " + MINUS + " term 2):", INK),
        ("its term 2 removes only the part along " + XHAT + ".", INK),
    ]
    for k, (content, colour) in enumerate(legend):
        body.append(text(540, 62 + 19 * k, content, colour=colour))
    markers = (("grey", GREY), ("orange", ORANGE), ("red", RED), ("blue", BLUE), ("green", GREEN))
    return svg(860, 340, body, markers)


# ---- RoPE: pairs and the rotation of one pair --------------------------------------------

def rope_rotation() -> str:
    body = [text(20, 28, "RoPE: dimension i is paired with i + hs/2 (hs = 8), and each pair rotates",
                 size=15, weight="bold")]
    pair_colours = (BLUE, ORANGE, GREEN, PURPLE)
    x0, y0, w, h, gap = 30, 120, 40, 30, 6
    for d in range(8):
        x = x0 + d * (w + gap)
        body += box(x, y0, w, h, ["x" + sub(d)], fill="#f4f8fc" if d < 4 else "#fdf6ee", math_font=True)
    for i in range(4):
        a = x0 + i * (w + gap) + w / 2
        b = x0 + (i + 4) * (w + gap) + w / 2
        lift = 28 + 12 * i
        body.append(path(f"M {num(a)} {y0} C {num(a)} {y0 - lift}, {num(b)} {y0 - lift}, {num(b)} {y0}",
                         colour=pair_colours[i], width=1.8))
        body.append(text(x0, y0 + h + 24 + 18 * i,
                         f"pair i = {i}: (x{sub(i)}, x{sub(i + 4)}) turns by α = (t\u2080 + t) θ{sub(i)}",
                         colour=pair_colours[i]))
    body.append(text(x0, y0 + h + 24 + 18 * 4 + 6, f"θ\u1d62 = Θ^(−2i/{H_S}): pair 0 turns fastest", colour=GREY))
    body.append(text(x0 + 2 * (w + gap) - 3, y0 - 68, "x\u207d\u00b9\u207e: first half", colour=GREY,
                     anchor="middle"))
    body.append(text(x0 + 6 * (w + gap) - 3, y0 - 68, "x\u207d\u00b2\u207e: second half", colour=GREY,
                     anchor="middle"))

    # One pair's plane.
    cx, cy, radius = 640, 200, 120
    body += [
        line(cx - radius - 25, cy, cx + radius + 30, cy, colour=GREY, width=1, arrow="grey"),
        line(cx, cy + radius + 20, cx, cy - radius - 25, colour=GREY, width=1, arrow="grey"),
        text(cx + radius + 30, cy + 20, "x\u1d62\u207d\u00b9\u207e", math_font=True, colour=GREY, anchor="end"),
        text(cx + 8, cy - radius - 14, "x\u1d62\u207d\u00b2\u207e", math_font=True, colour=GREY),
        circle(cx, cy, radius, colour=LIGHT, width=1),
    ]

    def point(angle_deg, length=radius):
        angle = math.radians(angle_deg)
        return cx + length * math.cos(angle), cy - length * math.sin(angle)

    def arc(start_deg, end_deg, length, colour):
        (x1, y1), (x2, y2) = point(start_deg, length), point(end_deg, length)
        sweep = 0 if end_deg > start_deg else 1
        return path(f"M {num(x1)} {num(y1)} A {length} {length} 0 0 {sweep} {num(x2)} {num(y2)}",
                    colour=colour, width=1.3, arrow="arc-" + ("blue" if colour == BLUE else "green"))

    x_deg, alpha, g_deg = 15, 55, 165
    body += [
        line(cx, cy, *point(x_deg), colour=INK, width=2.2, arrow="ink"),
        text(*(p + d for p, d in zip(point(x_deg), (6, 14))), "x", math_font=True, size=16),
        line(cx, cy, *point(x_deg + alpha), colour=BLUE, width=2.2, arrow="blue"),
        text(*(p + d for p, d in zip(point(x_deg + alpha), (6, -4))), "y = R(α) x", math_font=True, size=15,
             colour=BLUE),
        arc(x_deg, x_deg + alpha, 45, BLUE),
        text(*point(x_deg + alpha / 2, 58), "α", math_font=True, colour=BLUE, size=15),
        line(cx, cy, *point(g_deg, radius * 0.85), colour=ORANGE, width=2.2, arrow="orange"),
        text(*(p + d for p, d in zip(point(g_deg, radius * 0.85), (-16, -4))), "g", math_font=True, size=16,
             colour=ORANGE),
        line(cx, cy, *point(g_deg - alpha, radius * 0.85), colour=GREEN, width=2.2, arrow="green"),
        text(*(p + d for p, d in zip(point(g_deg - alpha, radius * 0.85), (-8, -6))),
             "dx = R(−α) g = R(α)ᵀ g", math_font=True, size=15, colour=GREEN, anchor="end"),
        arc(g_deg, g_deg - alpha, 32, GREEN),
        text(*point(g_deg - alpha / 2, 46), "−α", math_font=True, colour=GREEN, size=14, anchor="middle"),
        text(cx, cy + radius + 45, "one pair's plane: forward turns by α, backward turns back",
             anchor="middle", colour=GREY),
    ]
    markers = (("grey", GREY), ("ink", INK), ("blue", BLUE), ("orange", ORANGE), ("green", GREEN),
               ("arc-blue", BLUE), ("arc-green", GREEN))
    return svg(860, 380, body, markers)


# ---- attention: forward chain and backward terms -----------------------------------------

def attention_dataflow() -> str:
    body = [text(20, 28, "Attention, one head: the forward chain (top) and the backward terms (bottom)",
                 size=15, weight="bold")]
    fill_f, fill_b = "#eef4fb", "#fdf1e6"
    fy, fh = 70, 50                                    # forward row: top, height
    fmid = fy + fh / 2
    body += box(20, fy - 22, 60, 34, ["Q"], fill=fill_f, math_font=True)
    body += box(20, fy + 38, 60, 34, ["K"], fill=fill_f, math_font=True)
    body += box(130, fy, 120, fh, ["S = τ Q K" + TRANSPOSE, "scores"], fill=fill_f)
    body += box(300, fy, 150, fh, ["P = softmax(S)", "masked, per row"], fill=fill_f)
    body += box(500, fy, 110, fh, [PTILDE + " = P " + ODOT + " M", "dropout"], fill=fill_f)
    body += box(660, fy, 100, fh, ["O = " + PTILDE + " V"], fill=fill_f)
    body += box(810, fy, 60, fh, ["V"], fill=fill_f, math_font=True)
    body += [
        line(80, fy - 5, 130, fmid - 8, colour=BLUE, arrow="blue"),
        line(80, fy + 55, 130, fmid + 8, colour=BLUE, arrow="blue"),
        line(250, fmid, 300, fmid, colour=BLUE, arrow="blue"),
        line(450, fmid, 500, fmid, colour=BLUE, arrow="blue"),
        line(610, fmid, 660, fmid, colour=BLUE, arrow="blue"),
        line(810, fmid, 760, fmid, colour=BLUE, arrow="blue"),
    ]
    by, bh = 200, 62                                   # backward row
    bmid = by + bh / 2
    body += box(780, by, 90, bh, ["g = dO", "T × " + H_S], fill="#fff7ef", colour=ORANGE)
    body += box(545, by, 185, bh, ["term 2", "dP = (g V" + TRANSPOSE + ") " + ODOT + " M", "reads V, M"],
                fill=fill_b, colour=ORANGE)
    body += box(255, by, 240, bh, ["term 3", "dS = P " + ODOT + " (dP " + MINUS + " rowsum(g " + ODOT + " O))",
                                   "reads P, O"], fill=fill_b, colour=ORANGE)
    body += box(20, by, 185, bh, ["term 4", "dQ = τ dS K", "dK = dS" + TRANSPOSE + " (τ Q)"],
                fill=fill_b, colour=ORANGE)
    body += box(780, by + 100, 90, bh, ["term 1", "dV = " + PTILDE + TRANSPOSE + " g", "reads " + PTILDE],
                fill=fill_b, colour=ORANGE)
    body += [
        line(780, bmid, 730, bmid, colour=ORANGE, arrow="orange"),
        line(545, bmid, 495, bmid, colour=ORANGE, arrow="orange"),
        line(255, bmid, 205, bmid, colour=ORANGE, arrow="orange"),
        line(825, by + bh, 825, by + 100, colour=ORANGE, arrow="orange"),
        text(20, by + 90, "Backward walks the chain in reverse: each term is the matmul rule or the", colour=INK),
        text(20, by + 108, "softmax rule for one forward step, using what that step saved.", colour=INK),
        text(20, by + 134, "rowsum(dP " + ODOT + " P) = rowsum(g " + ODOT + " O): a T × " + H_S + " reduction,",
             colour=GREY),
        text(20, by + 152, "so term 3 needs no second T × " + T_K + " array.", colour=GREY),
    ]
    return svg(890, 380, body, (("blue", BLUE), ("orange", ORANGE)))


# ---- grouped-query attention: the reshape -------------------------------------------------

def gqa_reshape() -> str:
    title = f"Grouped-query attention: {N_H} = 4 query heads, {N_KV} = 2 kv heads, {N_REP} = 2"
    body = [text(20, 28, title, size=15, weight="bold")]
    head_colours = ("#cfe0f3", "#a9c8ea", "#fbd9b8", "#f6bb85")
    x0, y0, w, hh = 40, 70, 90, 44
    body.append(text(x0 + w / 2, y0 - 12, "q: (B, " + N_H + ", T, " + H_S + ")", anchor="middle"))
    for hd in range(4):
        body += box(x0, y0 + hd * (hh + 8), w, hh, [f"head {hd}", "T rows"], fill=head_colours[hd])
    # arrow
    body.append(line(x0 + w + 20, y0 + 100, x0 + w + 110, y0 + 100, colour=INK, arrow="ink"))
    body.append(text(x0 + w + 65, y0 + 88, "reshape", anchor="middle"))
    body.append(text(x0 + w + 65, y0 + 122, "(a view,", anchor="middle", colour=GREY))
    body.append(text(x0 + w + 65, y0 + 138, "no copy)", anchor="middle", colour=GREY))
    # grouped
    gx = x0 + w + 130
    body.append(text(gx + w / 2, y0 - 12, "(B, " + N_KV + ", " + N_REP + " T, " + H_S + ")", anchor="middle"))
    for grp in range(2):
        top = y0 + grp * (2 * hh + 20)
        body += [rect(gx - 4, top - 4, w + 8, 2 * hh + 8, fill="none", colour=INK, width=1.5, rx=4)]
        for k in range(2):
            hd = 2 * grp + k
            body += box(gx, top + k * hh, w, hh, [f"head {hd}"], fill=head_colours[hd])
        kx = gx + w + 70
        body += box(kx, top + hh / 2, 60, hh, [f"K{grp}, V{grp}"], fill="#eeeeee", math_font=True)
        body.append(line(kx, top + hh, gx + w + 6, top + hh, colour=INK, arrow="ink"))
        body.append(text(kx + 75, top + hh - 8, f"group {grp}: one matmul, S = (τQ) K{grp}" + TRANSPOSE
                         + ": (" + N_REP + " T) × " + T_K))
        body.append(text(kx + 75, top + hh + 12, f"dK{grp} = dS{TRANSPOSE} (τQ): the inner sum over {N_REP} T rows",
                         colour=GREEN))
        body.append(text(kx + 75, top + hh + 30, f"is the sum over heads {2 * grp} and {2 * grp + 1}", colour=GREEN))
    served = f"j·{N_REP} … (j + 1)·{N_REP} − 1"
    body.append(text(20, 330, f"kv head j serves query heads {served} (Hugging Face's repeat_kv), "
                     "but K and V are never repeated.", colour=GREY))
    return svg(860, 350, body, (("ink", INK),))


# ---- causal attention in query blocks: the staircase ------------------------------------

def causal_blocks() -> str:
    T, blocks, cell = 12, 3, 24
    x0, y0 = 110, 80
    body = [text(20, 28, "Causal attention in query blocks: T = 12, three blocks of 4 rows", size=15,
                 weight="bold"),
            text(x0 + T * cell / 2, y0 - 30, "keys j", anchor="middle"),
            text(x0 - 14, y0 - 26, "queries i", anchor="end")]
    bounds = [(T * k // blocks, T * (k + 1) // blocks) for k in range(blocks)]
    for j in range(T):
        body.append(text(x0 + j * cell + cell / 2, y0 - 8, str(j), size=10, anchor="middle", colour=GREY))
    for a, b in bounds:
        for i in range(a, b):
            body.append(text(x0 - 8, y0 + i * cell + cell / 2 + 4, str(i), size=10, anchor="end", colour=GREY))
            for j in range(T):
                if j <= i:
                    fill, colour, dash = BLUE, "white", None
                elif j < b:
                    fill, colour, dash = "#cddff0", "white", None
                else:
                    fill, colour, dash = "white", LIGHT, "2,2"
                body.append(rect(x0 + j * cell, y0 + i * cell, cell, cell, fill=fill, colour=colour, width=1,
                                 dash=dash))
        # the block's computed rectangle, rows [a, b) x keys [0, b)
        body.append(rect(x0, y0 + a * cell, b * cell, (b - a) * cell, fill="none", colour=INK, width=2))
        body.append(text(x0 - 30, y0 + (a + b) / 2 * cell + 4, f"[{a}, {b})", anchor="end"))
    legend_x, legend_y = x0 + T * cell + 40, y0 + 10
    legend = [
        (BLUE, "white", None, "j ≤ i: P > 0, computed"),
        ("#cddff0", "white", None, "j > i inside the block: computed,"),
        (None, None, None, "masked to −∞, so P = 0"),
        ("white", GREY, "2,2", "j ≥ b: never computed (P would be 0)"),
    ]
    for k, (fill, colour, dash, label) in enumerate(legend):
        if fill:
            body.append(rect(legend_x, legend_y + k * 26, 18, 18, fill=fill, colour=colour or INK, width=1,
                             dash=dash))
        body.append(text(legend_x + 28, legend_y + k * 26 + 14, label))
    notes = [
        "Block [a, b) uses queries [a, b) and keys [0, b) only:",
        "its rows have P = 0 for j > i, hence for all j ≥ b,",
        "so they add nothing to dK and dV of keys ≥ b.",
        "",
        "Computed: 4·4 + 4·8 + 4·12 = 96 of 144 scores,",
        "(n + 1)/2n = 2/3 for n = 3 blocks.",
    ]
    for k, note in enumerate(notes):
        body.append(text(legend_x, legend_y + 140 + 19 * k, note))
    return svg(860, y0 + T * cell + 40, body)


FIGURES = {
    "norm_projection.svg": norm_projection,
    "rope_rotation.svg": rope_rotation,
    "attention_dataflow.svg": attention_dataflow,
    "gqa_reshape.svg": gqa_reshape,
    "causal_blocks.svg": causal_blocks,
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Write the SVG figures of docs/derivations/.")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent,
                        help="directory to write into (default: beside this script)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name, draw in FIGURES.items():
        (args.out / name).write_text(draw(), encoding="utf-8")
        print(args.out / name)


if __name__ == "__main__":
    main()
