"""`tinyllm finetune`, `tinyllm classify` and the `tinyllm sample --instruct` prompt, end to end."""
import argparse
import json

import numpy as np
import pytest

from tinyllm import cli
from tinyllm.commands.sample import add_sample_flags, instruct_prompt, prepare_sample
from tinyllm.finetune import ALPACA, load_finetuned

FAST = ["--max-iters", "4", "--eval-interval", "2", "--eval-iters", "1", "--batch-size", "8", "--progress", "none"]


@pytest.fixture
def tinyllm(monkeypatch):
    """Run `tinyllm ARGS...` in-process; returns the exit status."""
    if "tinyllm.commands.finetune" not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", cli.COMMAND_MODULES + ("tinyllm.commands.finetune",))
    return lambda *argv: cli.main([str(a) for a in argv])


def test_finetune_then_classify(tinyllm, make_base, keyword_data, tmp_path, capsys):
    base, out = make_base(), tmp_path / "clf"
    status = tinyllm("finetune", "--task", "classify", "--init-from", base, "--data", keyword_data, "--out", out,
                     "--lora-rank", "2", "--lora-targets", "attn,mlp", "--lr", "1e-2", *FAST)
    assert status == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["finetune"]["lora_rank"] == 2 and saved["train"]["max_iters"] == 4
    assert saved["train"]["weight_decay"] == 0.0  # finetuning default, not pretraining's
    assert (out / "last" / "state.json").is_file() and (out / "adapter" / "adapter.safetensors").is_file()
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert {r["step"] for r in metrics} >= {0, 2, 4}
    capsys.readouterr()

    assert tinyllm("classify", "--ckpt", out, "a great film", "the plot was awful") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line in lines:
        label, probs = line.split("\t")
        assert label in ("neg", "pos")
        values = dict(part.split() for part in probs.split("  "))
        assert set(values) == {"neg", "pos"} and abs(sum(map(float, values.values())) - 1) < 1e-3

    assert tinyllm("classify", "--ckpt", out, "--json", "great") == 0
    record = json.loads(capsys.readouterr().out)
    assert record["label"] in ("neg", "pos") and set(record["probabilities"]) == {"neg", "pos"}

    # resume with more steps keeps the task settings and continues from step 4
    assert tinyllm("finetune", "--out", out, "--resume", "--max-iters", "6", "--progress", "none") == 0
    assert load_finetuned(out).checkpoint.step == 6
    assert tinyllm("finetune", "--out", out, "--resume", "--pooling", "mean") == 2
    assert "differs from the checkpoint" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--data", "{data}", "--init-from", "{base}"], "--task required"),
    (["--task", "summarize", "--data", "{data}", "--init-from", "{base}"], "--task 'summarize'"),
    (["--task", "classify", "--data", "{data}", "--init-from", "{base}", "--lora-rank", "-1"], "--lora-rank -1"),
    (["--task", "classify", "--data", "{data}", "--init-from", "{tmp}/nowhere"], "--init-from"),
    (["--task", "classify", "--data", "{bad}", "--init-from", "{base}"], "bad.jsonl: record 2 has no 'label'"),
    (["--task", "instruct", "--data", "{data}", "--init-from", "{base}", "--template", "nope"], "--template 'nope'"),
    (["--task", "classify", "--data", "{data}", "--init-from", "{base}", "--freeze", "blocks.9"], "--freeze"),
])
def test_finetune_errors_are_one_line_with_status_2(tinyllm, make_base, keyword_data, tmp_path, capsys, argv, message):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{"text": "b"}\n')
    values = {"data": keyword_data, "base": make_base(), "tmp": tmp_path, "bad": bad}
    argv = [a.format(**values) for a in argv]
    assert tinyllm("finetune", *argv, "--out", tmp_path / "run", *FAST) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_help_has_examples(tinyllm, capsys):
    for command in ("finetune", "classify"):
        with pytest.raises(SystemExit) as done:
            tinyllm(command, "--help")
        assert done.value.code == 0
        assert "examples:" in capsys.readouterr().out


def test_sample_instruct_uses_the_training_template(tinyllm, make_base, copy_data, tmp_path, capsys):
    base, out = make_base(block_size=48), tmp_path / "chat"
    template = tmp_path / "t.json"
    template.write_text(json.dumps({"with_input": "{instruction}: {input}\n", "without_input": "{instruction}\n"}))
    assert tinyllm("finetune", "--task", "instruct", "--init-from", base, "--data", copy_data, "--out", out,
                   "--template", template, "--lora-rank", "2", *FAST) == 0
    parser = argparse.ArgumentParser()
    parser.add_argument("--ckpt")
    parser.add_argument("--prompt", default="")
    add_sample_flags(parser)
    args = parser.parse_args(["--ckpt", str(out), "--instruct", "--prompt", "shout", "--input", "abc"])
    model, tokenizer, prompt = prepare_sample(args)
    assert prompt == "shout: abc\n"
    ids = model.generate(np.array([tokenizer.encode(prompt)]), max_new_tokens=3, temperature=0, seed=0)
    assert np.asarray(ids).shape[-1] >= 1
    assert instruct_prompt("Name a colour.") == ALPACA.format("Name a colour.")
    args = parser.parse_args(["--ckpt", str(base), "--instruct", "--prompt", "hello"])
    assert prepare_sample(args)[2] == ALPACA.format("hello")  # a pretrained checkpoint: the default template

