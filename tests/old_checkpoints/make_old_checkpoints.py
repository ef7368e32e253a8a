"""Writes tests/old_checkpoints/: checkpoints made by tinyllm BEFORE the Trainer(model, task,
strategy) restructuring, and the numbers that old code gets when it continues them.

This script is a record of how the fixtures were made; it is not run by the tests. It was
run with the tree of commit 2f165be (a pristine copy of it at /work/base):

    cd /work/base && PATH=/work/wt-trainer/.venv/bin:$PATH PYTHONPATH=/work/base \
        python /work/wt-trainer/tests/old_checkpoints/make_old_checkpoints.py /work/wt-trainer/tests/old_checkpoints

What it writes (every checkpoint directory holds only what a checkpoint holds: the
safetensors files, tokenizer.json and state.json):

    corpus.txt, keywords.jsonl, shout.jsonl     the data (generated, deterministic); short.json a prompt template
    pretrain/                                   one process, float32, dropout, step 6 of 12
    pipeline/                                   2 pipeline stages (mpiexec -n 2), float64, step 2 of 4
    base/                                       a tiny random GPT for finetuning (step 0)
    classify/, instruct/                        LoRA finetunes of base/, float64, step 3 of 6
    expected.json                               the old code's numbers when it continues each run, and the
                                                platform they were computed on (CPU architecture, NumPy, BLAS)
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from tinyllm import GPT, GPTConfig
from tinyllm import checkpoint as ckpt
from tinyllm.finetune import FinetuneConfig, finetune
from tinyllm.tokenizer import EOT_TOKEN, CharTokenizer
from tinyllm.settings import RunSettings
from tinyllm.train import train

from platform_id import platform_fingerprint  # beside this script

PRETRAIN = dict(n_layer=1, n_head=2, n_embd=16, block_size=16, batch_size=4, grad_accum=2, dropout=0.1,
                max_iters=12, eval_interval=4, eval_iters=2, log_interval=2, warmup_iters=2, lr=3e-3, min_lr=3e-4,
                progress="none", seed=7)
PIPELINE = dict(n_layer=2, n_head=2, n_embd=16, block_size=8, dropout=0.0, batch_size=4, max_iters=4,
                eval_interval=2, eval_iters=2, lr=1e-2, warmup_iters=1, dtype="float64", progress="none", seed=3,
                pipeline_stages=2, microbatches=2)
FINETUNE_TRAIN = dict(max_iters=6, eval_interval=3, eval_iters=1, batch_size=8, dtype="float64", lr=3e-3,
                      min_lr=1e-4, warmup_iters=2, weight_decay=0.0, progress="none", seed=0, log_interval=1)
ALPHABET = "abcdefghijklmnopqrstuvwxyz .,:;!?#\n0123456789-'ABCDEFGHIJKLMNOPQRSTUVWXYZ"


def corpus_text() -> str:
    rng = np.random.default_rng(0)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "it"]
    return "\n".join(" ".join(rng.choice(words, size=6)) + "." for _ in range(150)) + "\n"


def keyword_records(n=60):
    rng = np.random.default_rng(0)
    filler = ["the", "a", "movie", "was", "plot", "actor", "scene", "and", "very", "it", "film", "story"]
    records = []
    for i in range(n):
        words = list(rng.choice(filler, size=int(rng.integers(2, 5))))
        label = "pos" if i % 2 else "neg"
        words.insert(int(rng.integers(0, len(words) + 1)), "great" if label == "pos" else "awful")
        records.append({"text": " ".join(words), "label": label})
    return records


def shout_records(n=40):
    rng = np.random.default_rng(1)
    records = []
    for i in range(n):
        word = "".join(rng.choice(list("abcdef"), size=3))
        records.append({"instruction": "shout", "input": word, "output": word.upper()} if i % 3 else
                       {"instruction": f"shout {word}", "output": word.upper()})
    return records


def copy_checkpoint(run_dir: Path, dest: Path) -> None:
    """The checkpoint `run_dir/last` points at, as a plain directory."""
    source = (run_dir / "last").resolve()
    shutil.copytree(source, dest)


def as_run(checkpoint_dir: Path, run_dir: Path) -> Path:
    """A run directory whose `last` is a copy of `checkpoint_dir` (what a test does too)."""
    target = run_dir / "checkpoints" / "step-old"
    shutil.copytree(checkpoint_dir, target)
    os.symlink(Path("checkpoints") / "step-old", run_dir / "last")
    return run_dir


def files_sha256(run_dir: Path) -> dict:
    state = ckpt.read_state(run_dir)
    return {name: record["sha256"] for name, record in state["files"].items() if name.endswith(".safetensors")}


def metrics(run_dir: Path) -> list:
    """metrics.jsonl without the timings (which differ from run to run)."""
    timings = ("tokens_per_s", "gflop_per_s", "elapsed_s")
    return [{k: v for k, v in json.loads(line).items() if k not in timings}
            for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def mpirun(config: dict, work: Path, *args) -> dict:
    work.mkdir(parents=True, exist_ok=True)
    (work / "config.json").write_text(json.dumps(config))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    subprocess.run(["mpiexec", "-n", "2", sys.executable, "-m", "parallel.runner", str(work / "config.json"),
                    "--result", str(work / "result.json"), *args], check=True, env=env, cwd=os.getcwd())
    return json.loads((work / "result.json").read_text())


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    (out / "corpus.txt").write_text(corpus_text(), encoding="utf-8")
    expected = {}

    # ---- pretraining, one process: stop after step 6 of 12, then continue with 1 and 2 threads
    run = tmp / "pretrain"
    config = RunSettings.of(data=str(out / "corpus.txt"), out=str(run), threads=1, **PRETRAIN)
    train(config, stop_at=6)
    copy_checkpoint(run, out / "pretrain")
    expected["pretrain"] = {"first metrics": metrics(run)}
    for threads in (1, 2):
        again = as_run(out / "pretrain", tmp / f"pretrain-resume-{threads}")
        result = train(config.replace(out=str(again), resume=True, threads=threads))
        expected["pretrain"][f"threads={threads}"] = {
            "train_losses": result.train_losses, "last_eval": result.last_eval, "files_sha256": files_sha256(again),
            "metrics": metrics(again)}

    # ---- pretraining, 2 pipeline stages: stop after step 2 of 4, continue pipelined and in one process
    run = tmp / "pipeline"
    pipe_config = {**PIPELINE, "data": str(out / "corpus.txt"), "out": str(run)}
    mpirun(pipe_config, tmp / "pipe-w1", "--stop-at", "2")
    copy_checkpoint(run, out / "pipeline")
    again = as_run(out / "pipeline", tmp / "pipeline-resume-mpi")
    result = mpirun({**pipe_config, "out": str(again), "resume": True}, tmp / "pipe-w2")
    expected["pipeline"] = {"pipelined": {"train_losses": result["train_losses"], "last_eval": result["last_eval"]}}
    again = as_run(out / "pipeline", tmp / "pipeline-resume-single")
    single = RunSettings.from_dict({**pipe_config, "out": str(again), "resume": True, "pipeline_stages": 1,
                                    "microbatches": None, "threads": 1})
    result = train(single)
    expected["pipeline"]["one process"] = {"train_losses": result.train_losses, "last_eval": result.last_eval,
                                           "files_sha256": files_sha256(again)}

    # ---- finetuning: a tiny random base, LoRA classification and instruction runs stopped at step 3 of 6.
    # The finetune settings name their files relative to `out` (a resumed run must name the same ones),
    # so the runs start from there, and a test continues them from a copy of this directory.
    os.chdir(out)
    tokenizer = CharTokenizer.train(ALPHABET, special_tokens=[EOT_TOKEN])
    base_config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16)
    base_run = tmp / "base"
    ckpt.save_checkpoint(base_run, model=GPT(base_config, seed=0, dtype="float64"), tokenizer=tokenizer,
                         state={"step": 0, "model_config": base_config.to_dict(), "train_config": {"dtype": "float64"}})
    copy_checkpoint(base_run, out / "base")
    for name, records in (("keywords.jsonl", keyword_records()), ("shout.jsonl", shout_records())):
        (out / name).write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    (out / "short.json").write_text(json.dumps({"with_input": "{instruction}: {input}\n",
                                                "without_input": "{instruction}\n"}) + "\n")
    tasks = {"classify": dict(task="classify", data="keywords.jsonl", lora_rank=2, lora_targets=("attn", "mlp"),
                              val_fraction=0.2, test_fraction=0.2),
             "instruct": dict(task="instruct", data="shout.jsonl", template="short.json", lora_rank=2,
                              val_fraction=0.2, test_fraction=0.2)}
    for task, settings in tasks.items():
        fconfig = FinetuneConfig(init_from="base", **settings)
        run = tmp / task
        finetune(fconfig, RunSettings.of(out=str(run), **FINETUNE_TRAIN), stop_at=3)
        copy_checkpoint(run, out / task)
        again = as_run(out / task, tmp / f"{task}-resume")
        result = finetune(fconfig, RunSettings.of(out=str(again), resume=True, **FINETUNE_TRAIN))
        expected[task] = {"train_losses": result.train_losses, "last_eval": result.last_eval, "test": result.test,
                          "files_sha256": files_sha256(again), "first metrics": metrics(run),
                          "metrics": metrics(again)}

    expected["made_by"] = "tinyllm at commit 2f165be (before the Trainer(model, task, strategy) restructuring)"
    expected["platform"] = platform_fingerprint()
    (out / "expected.json").write_text(json.dumps(expected, indent=1, sort_keys=True) + "\n")
    shutil.rmtree(tmp)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
