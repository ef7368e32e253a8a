"""Checkpoints written before the Trainer(model, task, strategy) restructuring load and resume bitwise.

tests/old_checkpoints/ holds checkpoints made by the code of commit 2f165be (one-process
pretraining, a 2-stage pipeline, LoRA classification and instruction finetunes) and, in
expected.json, the numbers THAT OLD CODE got when it continued each of them, and the
metrics.jsonl records it wrote (see tests/old_checkpoints/make_old_checkpoints.py). The
code of today must continue them to exactly those numbers, write checkpoint files with the
same bytes, the same metrics records, and, started afresh, the checkpoints of those runs.
(The pipelined continuation is in tests/parallel/test_mpi_pipeline.py.)

Bits are compared where the platform is the one the numbers were computed on (CPU
architecture, NumPy, BLAS build and kernel: another BLAS kernel sums in another order);
elsewhere the numbers must agree to float32 rounding and the records in their fields.
"""
import json
import os
import shutil
from pathlib import Path

import pytest

from tinyllm import checkpoint as ckpt
from tinyllm.finetune import FinetuneConfig, Finetuning, finetune
from tinyllm.build import build_run
from tinyllm.settings import RunSettings
from tinyllm.train import Pretraining, train

from ..old_checkpoints.platform_id import platform_fingerprint

OLD = Path(__file__).resolve().parents[1] / "old_checkpoints"

EXPECTED = json.loads((OLD / "expected.json").read_text())   # written by the old code, not by this one
BITWISE = EXPECTED["platform"] == platform_fingerprint()
TIMINGS = ("tokens_per_s", "gflop_per_s", "elapsed_s")
# A finetune's tokens_seen: the old code counted block_size positions per row, where a padded batch
# runs only its longest row's; today's counts the positions run (the task's tokens(batch), checked below).
FINETUNE_COUNTS = ("tokens_seen",)


def assert_same(got, expected) -> None:
    """Equal, bit for bit on the platform of the recorded numbers; elsewhere floats to 1e-4 relative."""
    if BITWISE:
        assert got == expected
    elif isinstance(expected, dict):
        assert sorted(got) == sorted(expected)
        for key in expected:
            assert_same(got[key], expected[key])
    elif isinstance(expected, list):
        assert len(got) == len(expected)
        for a, b in zip(got, expected):
            assert_same(a, b)
    elif isinstance(expected, float):
        assert got == pytest.approx(expected, rel=1e-4)
    else:
        assert got == expected


def as_run(checkpoint_dir: Path, run_dir: Path) -> Path:
    """A run directory whose `last` is a copy of the old checkpoint."""
    shutil.copytree(checkpoint_dir, run_dir / "checkpoints" / "step-old")
    os.symlink(Path("checkpoints") / "step-old", run_dir / "last")
    return run_dir


def saved_config(name: str, **changes) -> RunSettings:
    """The settings an old checkpoint was saved with (so its format is read too), with changes."""
    return RunSettings.from_dict({**ckpt.read_state(OLD / name)["train_config"], **changes})


def tensor_sha256(path) -> dict:
    return {name: record["sha256"] for name, record in ckpt.read_state(path)["files"].items()
            if name.endswith(".safetensors")}


def metrics(run_dir: Path, *ignored) -> list:
    return [{k: v for k, v in json.loads(line).items() if k not in TIMINGS + ignored}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def comparable_state(path, *ignored) -> dict:
    """state.json without what differs between two runs of the same settings (timings, paths, how
    many cores split the batch), and without the dropout scheme of a run with dropout 0, which
    draws no mask (the new code writes its scheme, "keyed", where the old wrote an unused
    generator's state)."""
    state = ckpt.read_state(path)
    for key in ("elapsed_s", "files", "optimizer") + ignored:
        state.pop(key, None)
    for key in ("out", "data", "resume", "threads", "workers", "parallel",
                "virtual_stages", "zero", "recompute", "comm_timeout"):   # added after the fixtures (issues 15, 17, 24)
        state["train_config"].pop(key, None)
    finetune_config = state.get("finetune", {}).get("config", {})
    for key in ("init_from", "data", "template"):   # paths: stored absolute since issue 23; compared by name
        if key in finetune_config:
            finetune_config[key] = os.path.basename(finetune_config[key])
    if state["model_config"]["dropout"] == 0:
        state["rng"].pop("dropout")
    return state


def assert_same_files(got: dict, expected: dict) -> None:
    """The same checkpoint tensors: their sha256 (bitwise the same weights and AdamW moments)."""
    if BITWISE:
        assert got == expected


def assert_continues_like_the_old_code(result, run_dir: Path, expected: dict, ignored=()) -> None:
    assert result.status == "finished"
    assert_same(result.train_losses, expected["train_losses"])
    assert_same({split: result.last_eval[split] for split in ("train", "val")}, expected["last_eval"])
    assert_same_files(tensor_sha256(run_dir), expected["files_sha256"])
    if "metrics" in expected:
        assert_same(metrics(run_dir, *ignored), [{k: v for k, v in record.items() if k not in ignored}
                                                for record in expected["metrics"]])


@pytest.mark.parametrize("threads", [1, 2])
def test_an_old_pretraining_checkpoint_resumes_to_the_old_codes_numbers(tmp_path, threads):
    run = as_run(OLD / "pretrain", tmp_path / "run")
    config = saved_config("pretrain", data=str(OLD / "corpus.txt"), out=str(run), resume=True, threads=threads)
    result = train(config)
    assert_continues_like_the_old_code(result, run, EXPECTED["pretrain"][f"threads={threads}"])


def test_a_new_pretraining_run_writes_what_the_old_code_wrote(tmp_path):
    """With dropout masks drawn from the generator, as the old code drew them: this run has
    dropout 0.1, and a new run keys its masks by seed, step, layer and row instead (tinyllm/nn.py,
    DropoutMasks), which no generator draw reproduces. The generator scheme is kept for the
    runs older code began (the tests above resume them)."""
    run = tmp_path / "run"
    trainer = build_run(saved_config("pretrain", data=str(OLD / "corpus.txt"), out=str(run), threads=1), Pretraining())
    trainer.model.dropout_masks.scheme = "generator"
    trainer.run(stop_at=6)
    assert_same(metrics(run), EXPECTED["pretrain"]["first metrics"])
    assert_same_files(tensor_sha256(run), tensor_sha256(OLD / "pretrain"))
    assert_same(comparable_state(run), comparable_state(OLD / "pretrain"))


def test_an_old_pipeline_checkpoint_resumes_in_one_process_to_the_old_codes_numbers(tmp_path):
    run = as_run(OLD / "pipeline", tmp_path / "run")
    config = saved_config("pipeline", data=str(OLD / "corpus.txt"), out=str(run), resume=True, threads=1,
                          pipeline_stages=1, microbatches=None)
    assert_continues_like_the_old_code(train(config), run, EXPECTED["pipeline"]["one process"])


@pytest.fixture
def old_finetune_files(tmp_path, monkeypatch):
    """A copy of tests/old_checkpoints as the working directory: the old runs name their data,
    template and base model relative to it."""
    here = tmp_path / "old"
    shutil.copytree(OLD, here, ignore=shutil.ignore_patterns("pretrain", "pipeline", "*.py", "__pycache__"))
    monkeypatch.chdir(here)
    return here


@pytest.mark.parametrize("task", ["classify", "instruct"])
def test_an_old_finetune_checkpoint_resumes_to_the_old_codes_numbers(old_finetune_files, tmp_path, task):
    run = as_run(old_finetune_files / task, tmp_path / "run")
    config = FinetuneConfig.from_dict(ckpt.read_state(run)["finetune"]["config"])
    result = finetune(config, saved_config(task, out=str(run), resume=True, threads=1))
    expected = EXPECTED[task]
    assert_continues_like_the_old_code(result, run, expected, ignored=FINETUNE_COUNTS)
    assert_same(result.test, expected["test"])


@pytest.mark.parametrize("task", ["classify", "instruct"])
def test_a_new_finetune_run_writes_what_the_old_code_wrote(old_finetune_files, tmp_path, task):
    run = tmp_path / "run"
    config = FinetuneConfig.from_dict(ckpt.read_state(OLD / task)["finetune"]["config"])
    settings = saved_config(task, out=str(run), threads=1)
    finetune(config, settings, stop_at=3)
    assert_same(metrics(run, *FINETUNE_COUNTS), [{k: v for k, v in record.items() if k not in FINETUNE_COUNTS}
                                                 for record in EXPECTED[task]["first metrics"]])
    assert_same_files(tensor_sha256(run), tensor_sha256(OLD / task))
    # the old code saved step 3 twice (after the evaluation, then for stop_at without the losses); now once
    ignored = ("train_loss", "val_loss") + FINETUNE_COUNTS
    assert_same(comparable_state(run, *ignored), comparable_state(OLD / task, *ignored))
    # tokens_seen: the positions of the padded batches the 3 steps ran, as the task counts them
    again = build_run(settings.replace(out=str(tmp_path / "again")), Finetuning(config), log=lambda m: None)
    drawn = [again.task.next_batch() for _ in range(3 * settings.loop.grad_accum)]
    assert ckpt.read_state(run)["tokens_seen"] == sum(int(b[0].ids.size if task == "classify" else b[0].size)
                                                      for b in drawn)
    again.run_lock.release()
