"""The `tinyllm` command line: train -> sample/eval/info, TOML configs, one-line errors with exit 2, signals."""
import hashlib
import json
import math
import signal
import sys

import pytest

from tinyllm import checkpoint as ckpt
from tinyllm import download
from tinyllm.cli import main

from .interrupts import interrupt_after_step  # tests/train/interrupts.py

TINY = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--block-size", "16", "--batch-size", "4",
        "--eval-iters", "2", "--warmup-iters", "2", "--sample-tokens", "20", "--progress", "none"]


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, text_maker):
    """One tiny run on a generated corpus, shared by the read-only tests."""
    root = tmp_path_factory.mktemp("cli")
    corpus = root / "corpus.txt"
    corpus.write_text(text_maker(), encoding="utf-8")
    run = root / "run"
    assert main(["train", "--data", str(corpus), "--out", str(run), "--max-iters", "12", "--eval-interval", "6",
                 *TINY]) == 0
    return run


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_train_writes_config_metrics_and_checkpoints(trained_run):
    config = json.loads((trained_run / "config.json").read_text())
    assert config["train"]["max_iters"] == 12 and config["model"]["n_layer"] == 1
    records = [json.loads(line) for line in (trained_run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "val_loss" in r] == [0, 6, 12]
    for r in records[1:]:
        assert {"step", "train_loss", "lr", "tokens_per_s", "elapsed_s"} <= set(r)
    assert ckpt.load_checkpoint(trained_run).step == 12 and (trained_run / "best").exists()


def test_sampling_is_reproducible_by_seed(trained_run, capsys):
    args = ["sample", "--ckpt", str(trained_run), "--prompt", "the ", "--max-new-tokens", "40"]
    code, first, _ = run_cli(capsys, *args, "--seed", "5")
    assert code == 0 and first.startswith("the ") and len(first) > 30
    assert run_cli(capsys, *args, "--seed", "5")[1] == first
    assert run_cli(capsys, *args, "--seed", "6")[1] != first
    greedy = run_cli(capsys, *args, "--temperature", "0", "--seed", "1")[1]
    assert run_cli(capsys, *args, "--temperature", "0", "--seed", "2")[1] == greedy


def test_info_and_eval(trained_run, capsys):
    code, out, _ = run_cli(capsys, "info", "--ckpt", str(trained_run), "--json")
    info = json.loads(out)
    assert code == 0 and info["step"] == 12 and info["tokens_seen"] == 12 * 4 * 16
    assert info["num_parameters"] > 0 and info["model_config"]["n_embd"] == 32
    assert "parameters" in run_cli(capsys, "info", "--ckpt", str(trained_run))[1]
    code, out, _ = run_cli(capsys, "eval", "--ckpt", str(trained_run), "--json")
    result = json.loads(out)
    assert code == 0 and result["split"] == "val" and result["tokens"] > 100
    assert result["perplexity"] == pytest.approx(math.exp(result["loss"]))
    assert result["loss"] < math.log(info["model_config"]["vocab_size"])   # better than uniform


def test_toml_config_is_layered_under_flags(tmp_path, corpus_file, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text(f'data = "{corpus_file}"\nmax-iters = 4\nlr = 5e-3\n[train]\neval_interval = 2\n')
    run = tmp_path / "run"
    code, out, err = run_cli(capsys, "train", "--config", str(toml), "--out", str(run), "--lr", "2e-3", *TINY)
    assert code == 0 and "--- sample ---" in err and len(out.strip()) > 5    # a taste of the model on stdout
    train = json.loads((run / "config.json").read_text())["train"]
    assert (train["max_iters"], train["lr"], train["eval_interval"]) == (4, 2e-3, 2)
    code, out, err = run_cli(capsys, "train", "--out", str(run), "--resume", "--max-iters", "6", "--progress", "none")
    assert code == 0 and ckpt.load_checkpoint(run).step == 6


@pytest.mark.parametrize("argv, message", [
    (["train", "--lr", "-1"], "--lr -1.0: must be positive"),
    (["train", "--block-size", "0"], "--block-size 0: must be a positive integer"),
    (["train", "--data", "/no/such/corpus.txt"], "--data /no/such/corpus.txt: no such file or directory"),
    (["train", "--tokenizer", "/no/such.tok"], "--tokenizer /no/such.tok: no such file"),
    (["train", "--config", "/no/such.toml"], "--config /no/such.toml: no such file"),
    (["train", "--resume"], "--resume: r holds no checkpoint to resume"),
    (["sample", "--ckpt", "/no/such/run"], "--ckpt /no/such/run: no such directory"),
    (["eval", "--ckpt", "/no/such/run"], "--ckpt /no/such/run: no such directory"),
    (["info", "--ckpt", "/no/such/run"], "--ckpt /no/such/run: no such directory"),
])
def test_bad_values_get_one_line_and_exit_2(argv, message, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *argv, *(["--out", "r", "--progress", "none"] if argv[0] == "train" else []))
    assert code == 2
    assert err.strip().count("\n") == 0 and message in err and err.startswith(f"tinyllm {argv[0]}: error:")


def test_checkpoint_problems_exit_2(trained_run, tmp_path, capsys, corpus_file):
    code, _, err = run_cli(capsys, "train", "--data", str(corpus_file), "--out", str(trained_run), *TINY)
    assert code == 2 and "already holds a run" in err and "--resume" in err
    code, _, err = run_cli(capsys, "train", "--out", str(trained_run), "--resume", "--n-embd", "64")
    assert code == 2 and "--n-embd 64 differs from the checkpoint's 32" in err
    for argv in (["--temperature", "-1"], ["--top-p", "1.5"], ["--top-k", "-3"]):
        code, _, err = run_cli(capsys, "sample", "--ckpt", str(trained_run), *argv)
        assert code == 2 and argv[0] in err
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "state.json").write_text("{")
    code, _, err = run_cli(capsys, "info", "--ckpt", str(broken))
    assert code == 2 and "state.json: not valid JSON" in err


def test_every_command_has_help_with_examples(capsys):
    for command in ("train", "sample", "eval", "info", "plot", "data"):
        with pytest.raises(SystemExit) as exit_info:
            main([command, "--help"])
        assert exit_info.value.code == 0
        assert "examples:" in capsys.readouterr().out


def test_flag_help_is_the_config_fields_description(capsys, monkeypatch):
    """One source for what a setting means: a settings field's (or FinetuneConfig field's) description
    is its flag's help, in `tinyllm train --help` and, for the sections it reads, `tinyllm finetune --help`;
    finetune has no flag of the sections it does not read."""
    import dataclasses

    from tinyllm.finetune import FinetuneConfig, Finetuning
    from tinyllm.settings import RunSettings
    monkeypatch.setenv("COLUMNS", "2000")   # no wrapping

    def help_text(command):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        return " ".join(capsys.readouterr().out.split())
    train_help, finetune_help = help_text("train"), help_text("finetune")
    for name, (section, f) in RunSettings.fields().items():
        if name != "schedule":   # its help lists the registered schedules (tests/parallel/test_schedule_registry.py)
            assert f.metadata["help"] in train_help, name
        if name not in {f.name for f in dataclasses.fields(FinetuneConfig)}:   # finetune's own --data, --tokenizer
            takes = section is None or section in Finetuning.sections
            assert takes == (f"--{name.replace('_', '-')} " in finetune_help), name
    assert "--n-layer LAYER transformer blocks (default: the preset's)" in train_help
    assert "--lr LR peak learning rate (default: 0.001)" in train_help
    assert "--lr LR peak learning rate (default: 0.0005)" in finetune_help        # finetuning's own default
    for f in dataclasses.fields(FinetuneConfig):
        assert f.metadata["help"] in finetune_help, f.name


def test_plot_without_matplotlib_says_how_to_install(trained_run, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = run_cli(capsys, "plot", str(trained_run))
    assert code == 2 and "pip install 'tinyllm[plot]'" in err


def test_plot_writes_a_png(trained_run, tmp_path, capsys):
    pytest.importorskip("matplotlib", reason="the plot extra (matplotlib) is not installed")
    out = tmp_path / "loss.png"
    assert run_cli(capsys, "plot", str(trained_run), "--out", str(out))[0] == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_pipeline_flags_without_mpi4py_say_install_the_extra(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    code, _, err = run_cli(capsys, "train", "--out", str(tmp_path / "p"), "--pipeline-stages", "2")
    assert code == 2 and "install the mpi extra: pip install 'tinyllm[mpi]'" in err


def test_data_download_command(tmp_path, capsys, monkeypatch):
    payload = b"To be, or not to be\n"
    source = tmp_path / "src.txt"
    source.write_bytes(payload)
    spec = download.Download(url="https://example.invalid", filename="x.txt", size=len(payload),
                         sha256=hashlib.sha256(payload).hexdigest())
    monkeypatch.setitem(download.DOWNLOADS, "tinyshakespeare", spec)
    out = tmp_path / "shakespeare.txt"
    code, _, err = run_cli(capsys, "data", "download", "tinyshakespeare", "--out", str(out), "--url", source.as_uri())
    assert code == 0 and out.read_bytes() == payload
    code, _, err = run_cli(capsys, "data", "download", "tinyshakespeare", "--out", str(out),
                           "--url", (tmp_path / "missing").as_uri())
    assert code == 2 and "could not download" in err


@pytest.mark.parametrize("command", ["train", "finetune"])
def test_sigterm_saves_a_checkpoint_and_exits_128_plus_the_signal(command, tmp_path, corpus_file, trained_run):
    """Both training commands: finish the step, save DIR/last, exit 143 (`tinyllm finetune` exited 130 before)."""
    run = tmp_path / "run"
    if command == "train":
        argv = ["train", "--data", corpus_file, "--out", run, *TINY[:-2]]
    else:
        labelled = tmp_path / "labels.jsonl"
        labelled.write_text("".join(json.dumps({"text": f"the {w} sat", "label": w}) + "\n"
                                    for w in ("cat", "dog") * 10))
        argv = ["finetune", "--task", "classify", "--init-from", trained_run, "--data", labelled, "--out", run,
                "--eval-iters", "1", "--batch-size", "4"]
    status, rest = interrupt_after_step(argv, 3)
    assert status == 128 + signal.SIGTERM
    assert "interrupted by SIGTERM" in rest and "--resume" in rest and "Traceback" not in rest
    saved = ckpt.load_checkpoint(run)
    assert saved.step >= 3 and saved.optimizer_state is not None
