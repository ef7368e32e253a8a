"""Hand-derived layer Functions, one family per file, each with forward and backward side by side.

Every Function here has a composed reference in `autograd.functional` (built from the
primitives in `autograd.ops`, with `fused=False`); tests check fused backward = composed
backward = float64 finite differences. Each backward's terms are named in comments that
match its page in docs/derivations/.
"""
