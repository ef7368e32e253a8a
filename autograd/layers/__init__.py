"""Hand-derived layer Functions, one family per file, each with forward and backward side by side.

Names: a layer's Function is `<Layer>Function` (LinearFunction, LayerNormFunction,
ScaledDotProductAttentionFunction, ...), so it never clashes with the module of the same
layer in tinyllm.nn (Linear, LayerNorm) and needs no alias at import. Primitive ops in
autograd/ops keep their op names (Add, MatMul, ...). Raw-array helpers beside the
Functions are lower-case functions named for what they compute (causal_mask,
attention_probs, rope_tables, stable_softmax), with a trailing underscore when they work
in place (masked_softmax_).

Every Function here has a composed reference in `autograd.functional` (built from the
primitives in `autograd.ops`, with `composed=True`); tests check hand-derived backward =
composed backward = float64 finite differences. Each backward's terms are named in comments that
match its page in docs/derivations/.
"""
