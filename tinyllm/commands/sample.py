"""`tinyllm sample`: generate text from a checkpoint, streamed to the terminal as it is drawn.

The prompt is encoded with the checkpoint's own tokenizer; with no prompt, generation
starts from the end-of-text token if the tokenizer has one, else from a newline. Tokens
are decoded incrementally (bytes through a UTF-8 decoder), so a multi-byte character
split across BPE tokens prints whole. The same --seed gives the same text.

A checkpoint of `tinyllm finetune --task instruct` is rebuilt on its base model (LoRA
adapters merged for speed); with --instruct, --prompt is an instruction, formatted with
the template the model was finetuned with (or --template), with an optional --input.

Left out: batched sampling of several prompts at once, beam search.
"""
from __future__ import annotations

import codecs
import sys

from tinyllm import checkpoint as ckpt
from tinyllm.commands.common import UsageError, add_command, check_device, load_model, positive_int
from tinyllm.finetune import TEMPLATES, is_finetune_checkpoint, load_finetuned, load_template

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
    add_sample_flags(parser)
    parser.set_defaults(handler=run)


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
    model, tokenizer, prompt = prepare_sample(args)
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


# ---- instruction-finetuned checkpoints ---------------------------------------------------------


def add_sample_flags(parser) -> None:
    """--instruct, --input and --template for `tinyllm sample`."""
    parser.add_argument("--instruct", action="store_true",
                        help="treat --prompt as an instruction and format it with the prompt template "
                             "(the one the checkpoint was finetuned with, else --template)")
    parser.add_argument("--input", default="", help="with --instruct: the optional input of the instruction")
    parser.add_argument("--template", default=None,
                        help=f"with --instruct: {', '.join(TEMPLATES)} or a JSON file (default: the checkpoint's, "
                             "else alpaca)")


def instruct_prompt(instruction: str, input: str = "", template="alpaca") -> str:  # noqa: A002
    """The prompt text finetuning trained on: template (a name, JSON file or PromptTemplate) filled in."""
    if not isinstance(template, str) and hasattr(template, "format"):
        return template.format(instruction, input)
    return load_template(template).format(instruction, input)


def prepare_sample(args) -> tuple:
    """(model, tokenizer, prompt text) for `tinyllm sample`; see the module docstring."""
    template = None
    check_device(getattr(args, "device", "cpu"))
    checkpoint = ckpt.load_checkpoint(args.ckpt, with_optimizer=False)   # one checkpoint, read once
    if is_finetune_checkpoint(checkpoint):
        if checkpoint.state["finetune"]["config"].get("task") == "classify":
            raise UsageError(f"--ckpt {args.ckpt}: a classifier (finetuned with --task classify) does not generate "
                             "text; use `tinyllm classify`")
        finetuned = load_finetuned(checkpoint, device=getattr(args, "device", "cpu"), merged=True)
        model, tokenizer, template = finetuned.model, finetuned.tokenizer, finetuned.template
    else:
        model, tokenizer, _ = load_model(checkpoint, device=getattr(args, "device", "cpu"))
    prompt = args.prompt
    if getattr(args, "instruct", False):
        if not prompt.strip():
            raise UsageError("--instruct needs the instruction as --prompt TEXT")
        if getattr(args, "template", None):
            template = args.template
        prompt = instruct_prompt(prompt, getattr(args, "input", ""), template or "alpaca")
    return model, tokenizer, prompt
