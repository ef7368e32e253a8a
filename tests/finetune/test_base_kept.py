"""A finetune keeps its base model by content, so the base run may move on.

A LoRA finetune made with `--init-from runs/demo` used to record that path and rebuild from
`runs/demo/last` when loaded: once the base run trained on (its `last` moved, the old checkpoint
pruned) the finetune was stranded. Now the finetune copies the base checkpoint into its run
directory (DIR/base, hard links: no space used on one file system) and builds on that copy.
"""
import json
import os
import shutil

import numpy as np
import pytest

from tinyllm import GPT, GPTConfig
from tinyllm import checkpoint as ckpt
from tinyllm.cli import main
from tinyllm.finetune import FinetuneConfig, classify_texts, finetune, load_finetuned
from tinyllm.settings import RunSettings

TEXTS = ["the movie was great", "an awful plot"]
BASE_DIR = "base"   # DIR/base: a finetune's copy of its base checkpoint


@pytest.fixture
def keyword_data(write_jsonl, records):
    return write_jsonl(records["keyword"](48), "keywords.jsonl")


def assert_one_line_error(code, err, command, *fragments):
    """Exit 2 and one error line, the last (tests/faults/bounded.py's rule)."""
    lines = [line for line in err.splitlines() if line.strip()]
    errors = [line for line in lines if ": error:" in line]
    assert code == 2 and errors == lines[-1:] and errors[0].startswith(f"tinyllm {command}: error: "), err
    for fragment in fragments:
        assert fragment in errors[0], f"{fragment!r} not in {errors[0]!r}"


def settings(out, **changes):
    values = dict(out=str(out), max_iters=4, lr=3e-3, batch_size=8, eval_interval=2, eval_iters=2,
                  warmup_iters=1, progress="none", seed=0, workers=1)
    values.update(changes)
    return RunSettings.of(**values)


def train_the_base_on(base):
    """What `tinyllm train --resume` on the base run does to it: a new `last`, the old checkpoint pruned."""
    state = ckpt.read_state(base)
    model = GPT(GPTConfig.from_dict(state["model_config"]), seed=7)
    old = (base / "last").resolve()
    ckpt.save_checkpoint(base, model=model, tokenizer=ckpt.load_checkpoint(base).tokenizer(),
                         state={**state, "step": state["step"] + 1})
    assert not old.exists()


def test_a_lora_finetune_survives_its_base_run_training_on_and_being_deleted(make_base, keyword_data, tmp_path):
    base = make_base()
    run = tmp_path / "clf"
    config = FinetuneConfig(task="classify", init_from=str(base), data=str(keyword_data), lora_rank=2)
    finetune(config, settings(run))
    before = classify_texts(load_finetuned(run), TEXTS)
    copied = run / BASE_DIR / ckpt.MODEL_FILE
    assert os.stat(copied).st_ino == os.stat(base / "last" / ckpt.MODEL_FILE).st_ino   # a hard link: no space used
    assert not (run / BASE_DIR / ckpt.OPTIMIZER_FILE).exists()

    train_the_base_on(base)
    assert np.array_equal(classify_texts(load_finetuned(run), TEXTS), before)
    finetune(config, settings(run, max_iters=6, resume=True))   # resumes on the same frozen weights
    shutil.rmtree(base)
    assert ckpt.read_state(run)["step"] == 6 and classify_texts(load_finetuned(run), TEXTS).shape == (2, 2)


def test_resuming_with_another_base_is_refused_unless_the_base_moved(make_base, keyword_data, tmp_path, capsys):
    base, other = make_base(), make_base("other", seed=1)
    run = tmp_path / "clf"
    code = main(["finetune", "--task", "classify", "--init-from", str(base), "--data", str(keyword_data), "--out",
                 str(run), "--max-iters", "2", "--eval-interval", "1", "--progress", "none", "--lora-rank", "2", "--workers", "1"])
    assert code == 0, capsys.readouterr().err
    capsys.readouterr()
    code = main(["finetune", "--out", str(run), "--resume", "--max-iters", "3", "--init-from", str(other)])
    assert_one_line_error(code, capsys.readouterr().err, "finetune", f"--init-from '{other}' differs",
                          f"keeps its base model (a copy is in {run / BASE_DIR})")


def test_a_finetune_whose_base_is_gone_names_its_state_json_not_a_flag(make_base, keyword_data, tmp_path, capsys):
    """A finetune made before bases were kept (no DIR/base), whose base is gone."""
    base = make_base()
    run = tmp_path / "clf"
    finetune(FinetuneConfig(task="classify", init_from=str(base), data=str(keyword_data), freeze="all"),
             settings(run, max_iters=2))
    shutil.rmtree(run / BASE_DIR, ignore_errors=True)
    shutil.rmtree(base)
    code = main(["classify", "--ckpt", str(run), "the movie"])
    assert_one_line_error(code, capsys.readouterr().err, "classify", "state.json: its base model", str(base),
                          "is not there", "--init-from where it is now")


@pytest.mark.parametrize("command", ["eval", "sample"])
def test_eval_and_sample_of_a_classifier_say_what_it_is(command, make_base, keyword_data, tmp_path, capsys):
    run = tmp_path / "clf"
    finetune(FinetuneConfig(task="classify", init_from=str(make_base()), data=str(keyword_data), freeze="all"),
             settings(run, max_iters=2))
    code = main([command, "--ckpt", str(run)])
    assert_one_line_error(code, capsys.readouterr().err, command, "a classifier (finetuned with --task classify)",
                          "tinyllm classify")


def test_eval_of_an_instruction_finetune_measures_its_loss_on_a_text(make_base, copy_data, tmp_path, capsys):
    run = tmp_path / "chat"
    template = tmp_path / "short.json"
    template.write_text(json.dumps({"with_input": "{instruction}: {input}\n", "without_input": "{instruction}\n"}))
    finetune(FinetuneConfig(task="instruct", init_from=str(make_base()), data=str(copy_data), lora_rank=2,
                            template=str(template)), settings(run, max_iters=2))
    capsys.readouterr()
    code = main(["eval", "--ckpt", str(run)])
    assert_one_line_error(code, capsys.readouterr().err, "eval", "an instruction finetune has no text split",
                          "--data")
    text = tmp_path / "text.txt"
    text.write_text("the movie was great. the plot was very good.\n" * 4)
    assert main(["eval", "--ckpt", str(run), "--data", str(text), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["tokens"] > 0 and np.isfinite(result["loss"])
