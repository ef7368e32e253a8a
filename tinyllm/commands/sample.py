"""`tinyllm sample`: generate text from a checkpoint, streamed to the terminal as it is drawn.

The prompt is encoded with the checkpoint's own tokenizer; with no prompt, generation
starts from the end-of-text token if the tokenizer has one, else from a newline. Tokens
are decoded incrementally (bytes through a UTF-8 decoder), so a multi-byte character
split across BPE tokens prints whole. The same --seed gives the same text.

Left out: batched sampling of several prompts at once, beam search.
"""
from __future__ import annotations

import codecs
import sys

from tinyllm.commands.common import UsageError, add_command, load_model, positive_int

EXAMPLES = """\
tinyllm sample --ckpt runs/demo
tinyllm sample --ckpt runs/demo --prompt "The " --max-new-tokens 300 --temperature 0.8 --top-k 40 --seed 7
tinyllm sample --ckpt runs/demo/best --temperature 0      # greedy
tinyllm sample --ckpt runs/demo --top-p 0.9 --num-samples 3"""


def register(subparsers) -> None:
    parser = add_command(subparsers, "sample", "generate text from a checkpoint",
                         "Generate text from a trained checkpoint, printing tokens as they are sampled.", EXAMPLES)
    parser.add_argument("--ckpt", required=True, metavar="DIR", help="run directory (uses DIR/last) or checkpoint")
    parser.add_argument("--prompt", default="", help="text to continue (default: start of text)")
    parser.add_argument("--max-new-tokens", type=positive_int, default=500, help="tokens to generate")
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy; higher = more random")
    parser.add_argument("--top-k", type=int, default=200, help="sample among the k likeliest tokens (0 = off)")
    parser.add_argument("--top-p", type=float, default=None, help="nucleus sampling threshold in (0, 1]")
    parser.add_argument("--seed", type=int, default=1337, help="random seed for the draws")
    parser.add_argument("--num-samples", type=positive_int, default=1, help="samples to draw, one after another")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where the model runs")
    finetune = _finetune_commands()
    if finetune is not None:  # --instruct, --input, --template for instruction-finetuned checkpoints
        finetune.add_sample_flags(parser)
    parser.set_defaults(handler=run)


def _finetune_commands():
    """tinyllm.commands.finetune when this installation has it (it reads finetuned checkpoints)."""
    try:
        from tinyllm.commands import finetune  # noqa: PLC0415
    except ModuleNotFoundError as error:
        if error.name in ("tinyllm.commands.finetune", "tinyllm.finetune"):
            return None
        raise
    return finetune


def start_ids(tokenizer, prompt: str) -> list:
    if prompt:
        ids = tokenizer.encode_ordinary(prompt)
        if not ids:
            raise UsageError(f"--prompt {prompt!r} encodes to no tokens")
        return ids
    if tokenizer.eot_id is not None:
        return [tokenizer.eot_id]
    try:
        return tokenizer.encode_ordinary("\n")
    except (KeyError, ValueError):
        return [0]


def check_args(args) -> None:
    if not args.temperature >= 0 or args.temperature == float("inf"):
        raise UsageError(f"--temperature {args.temperature}: must be a finite number >= 0 (0 = greedy)")
    if args.top_k < 0:
        raise UsageError(f"--top-k {args.top_k}: must be a positive integer, or 0 for no top-k filter")
    if args.top_p is not None and not 0 < args.top_p <= 1:
        raise UsageError(f"--top-p {args.top_p}: must be in (0, 1], e.g. 0.9")
    if args.seed < 0:
        raise UsageError(f"--seed {args.seed}: must be a non-negative integer")


def run(args, out=None) -> int:
    out = out or sys.stdout
    top_k = args.top_k or None
    check_args(args)
    finetune = _finetune_commands()
    if finetune is not None:  # also rebuilds finetuned checkpoints and formats --instruct prompts
        model, tokenizer, prompt = finetune.prepare_sample(args)
    else:
        model, tokenizer, _ = load_model(args.ckpt, device=args.device)
        prompt = args.prompt
    try:
        prompt_ids = start_ids(tokenizer, prompt)
    except (KeyError, ValueError) as error:
        raise UsageError(f"--prompt {prompt!r} cannot be encoded by this checkpoint's tokenizer ({error}); "
                         "use only characters the model was trained on") from None
    for i in range(args.num_samples):
        if i:
            out.write("---------------\n")
        stream_sample(model, tokenizer, prompt, prompt_ids, args.max_new_tokens, args.temperature, top_k,
                      args.top_p, args.seed + i, out)
    return 0


def stream_sample(model, tokenizer, prompt: str, prompt_ids: list, max_new_tokens: int, temperature: float,
                  top_k, top_p, seed: int, out) -> None:
    """Write `prompt`, then each sampled token as soon as it is drawn, then a newline."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    out.write(prompt)

    def stream(token: int) -> None:
        if token == tokenizer.eot_id:
            return
        out.write(decoder.decode(tokenizer.decode_bytes([token])))
        out.flush()

    model.generate(prompt_ids, max_new_tokens=max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                   seed=seed, eos_id=tokenizer.eot_id, stream=stream)
    out.write(decoder.decode(b"", final=True) + "\n")
    out.flush()
