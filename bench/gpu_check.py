"""The prepared GPU check: everything to measure and verify on one GPU machine, in one run.

    python bench/gpu_check.py --out DIR                     # on a machine with a GPU (H100/H200: < 6 min)
    python bench/gpu_check.py --out DIR --fake-cuda --small # anywhere: the CPU stand-in, tiny shapes (CI)

Parts, in order, each in its own process with its own time limit (the whole run stays inside
--budget-s), each recorded as pass, fail or skipped (with the reason) in DIR/gpu_check.json,
their output in DIR/gpu_check.log:

    environment     Python, NumPy, CuPy (or the stand-in), the GPU, PyTorch, MPI
    train           tinyllm trains the GPT-2 124M shape (12 layers, 12 heads, 768 wide, block
                    1024, batch 8, float32, TF32 allowed: CUPY_TF32=1): tokens/s, step time,
                    peak device memory (CuPy's pool), losses
    torch           PyTorch eager, the same shape and corpus (the reference trainer,
                    ../shared/bench/ref_torch_gpt.py, --ref-script), --tf32: tokens/s, peak memory
    decode          KV-cache decoding with the 124M shape: new tokens/s for 1 and 8 rows
    gradcheck       `tinyllm gradcheck --device cuda --model` (float64 finite differences)
    device_tests    the test suite's [cuda] tests on the real device
    pipeline        2 ranks over mpiexec sharing the GPU, host-staged (when mpiexec is there)

Both trainers read one generated corpus with exactly 50257 distinct characters, so a
character vocabulary is GPT-2's size on both sides and the models have 124M parameters.
--small shrinks every shape (CI runs it on the stand-in: tests/device/test_gpu_check.py).
The exit status is 1 when a part failed, 0 otherwise. Nothing here needs the network.

Left out: multi-GPU runs (one device; the pipeline shares it), kernel-level profiles.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GPT2_VOCAB = 50257
FULL = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, batch_size=8, warmup=2, steps=5, chars=400_000)
SMALL = dict(n_layer=2, n_head=2, n_embd=32, block_size=32, batch_size=4, warmup=1, steps=2, chars=20_000)
PART_LIMITS_S = {"environment": 60, "train": 150, "torch": 150, "decode": 60, "gradcheck": 90, "device_tests": 150,
                 "pipeline": 90}
DEVICE_TESTS = ["tests/device", "tests/autograd/test_tensor.py", "tests/model/test_model.py",
                "tests/model/test_device_decode.py", "tests/train/test_device_training.py", "tests/train/test_train.py",
                "tests/finetune/test_device_finetune.py", "tests/parallel/test_device_pipeline.py"]


# ---- the parts that run in a child process of this script ------------------------------------

def environment(args) -> dict:
    import numpy as np

    from autograd import backend
    found = {"python": platform.python_version(), "numpy": np.__version__, "cuda_backend": backend.cuda_backend(),
             "machine": platform.node(), **backend.cuda_versions()}
    if backend.cupy_available():
        found.update(gpus=backend.device_count(), gpu=backend.device_name(0))
    for module in ("torch", "mpi4py", "pytest", "hypothesis"):
        try:
            found[module] = __import__(module).__version__
        except Exception as error:  # noqa: BLE001 - missing, or a CUDA runtime that does not load
            found[module] = f"not available ({type(error).__name__})"
    found["mpiexec"] = shutil.which("mpiexec")
    return found


def train(args) -> dict:
    """tinyllm's own training loop on the device, timed after warm-up steps."""
    from autograd import backend
    from tinyllm.build import build_run
    from tinyllm.settings import RunSettings
    from tinyllm.train import Pretraining
    shape = SMALL if args.small else FULL
    config = RunSettings.of(data=str(args.corpus), out=str(Path(args.out) / "train-run"), tokenizer="char",
                            preset="gpt2", n_layer=shape["n_layer"], n_head=shape["n_head"], n_embd=shape["n_embd"],
                            block_size=shape["block_size"], batch_size=shape["batch_size"], dropout=0.0,
                            max_iters=shape["warmup"] + shape["steps"], warmup_iters=1, eval_iters=1, lr=1e-3,
                            dtype="float32", device="cuda", progress="none")
    trainer = build_run(config, Pretraining(), log=lambda message: print(message, flush=True))
    losses = [trainer.train_step()[0] for _ in range(shape["warmup"])]
    backend.synchronize()
    start = time.perf_counter()
    losses += [trainer.train_step()[0] for _ in range(shape["steps"])]
    backend.synchronize()
    seconds = time.perf_counter() - start
    tokens = shape["steps"] * shape["batch_size"] * shape["block_size"]
    memory = backend.device_memory()
    return {"shape": shape, "parameters": trainer.model.num_parameters(), "vocab_size": trainer.model.config.vocab_size,
            "tokens_per_s": round(tokens / seconds, 1), "step_ms": round(1000 * seconds / shape["steps"], 1),
            "peak_device_mib": round(memory["pool_bytes"] / 2**20, 1), "losses": [round(v, 4) for v in losses]}


def decode(args) -> dict:
    """New tokens per second with the KV cache, one row and eight."""
    import numpy as np

    from autograd import backend
    from tinyllm import GPT, GPTConfig
    shape, vocab = (SMALL, 200) if args.small else (FULL, GPT2_VOCAB)
    config = GPTConfig(vocab_size=vocab, block_size=shape["block_size"], n_layer=shape["n_layer"],
                       n_head=shape["n_head"], n_embd=shape["n_embd"])
    model = GPT(config, seed=0, device="cuda")
    new = 16 if args.small else 128
    found = {}
    for rows in (1, 8):
        prompt = np.random.default_rng(rows).integers(0, vocab, (rows, 16))
        model.generate(prompt, max_new_tokens=4, temperature=0.8, top_k=50)        # warm-up: kernels, caches
        backend.synchronize()
        start = time.perf_counter()
        out = model.generate(prompt, max_new_tokens=new, temperature=0.8, top_k=50)
        seconds = time.perf_counter() - start
        assert out.shape == (rows, 16 + new)
        found[f"rows_{rows}"] = {"new_tokens_per_s": round(rows * new / seconds, 1),
                                 "ms_per_step": round(1000 * seconds / new, 2)}
    return found


IN_CHILD = {"environment": environment, "train": train, "decode": decode}


# ---- the parent: parts as processes, the report ------------------------------------------------

def make_corpus(path: Path, n_chars: int, vocab: int = GPT2_VOCAB, seed: int = 0) -> Path:
    """Text holding exactly `vocab` distinct characters (CJK code points from U+20000), then random ones."""
    import numpy as np
    if path.is_file():
        return path
    rng = np.random.default_rng(seed)
    alphabet = np.array([chr(0x20000 + i) for i in range(vocab)])
    text = "".join(rng.permutation(alphabet)) + "".join(rng.choice(alphabet, size=max(n_chars - vocab, 0)))
    path.write_text(text, encoding="utf-8")
    return path


class Check:
    """Runs the parts, each a process with a time limit inside the overall budget, and keeps the record."""

    def __init__(self, args):
        self.args, self.out = args, Path(args.out)
        self.started = time.monotonic()
        self.log = open(self.out / "gpu_check.log", "w", encoding="utf-8")
        self.env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
                    "TINYLLM_FAKE_CUDA": "1" if args.fake_cuda else "0", "PYTHONUNBUFFERED": "1"}
        self.tf32_env = {**self.env, "CUPY_TF32": "1"}   # TF32 matrix products: the speed parts only
        self.parts = {}

    def left_s(self) -> float:
        return self.args.budget_s - (time.monotonic() - self.started)

    def run(self, name: str, command: list, parse=None, cwd=REPO, env=None, optional: bool = False) -> dict:
        """Run `command` as part `name`; parse(stdout) -> details. The record goes into self.parts.
        optional: a module missing on this machine makes the part skipped, not failed."""
        limit = min(PART_LIMITS_S[name] * (0.5 if self.args.small else 1), self.left_s() - 5)
        if limit < 10:
            return self.record(name, "skipped", 0.0, reason=f"no time left in the {self.args.budget_s:.0f} s budget")
        self.note(f"==== {name}: {' '.join(map(str, command))} (limit {limit:.0f} s)")
        start = time.monotonic()
        try:
            proc = subprocess.run(command, cwd=cwd, env=env or self.env, capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired as error:
            self.note(_text(error.stdout) + _text(error.stderr))
            return self.record(name, "fail", time.monotonic() - start, reason=f"timed out after {limit:.0f} s")
        seconds = time.monotonic() - start
        self.note(proc.stdout + proc.stderr)
        missing = re.search(r"No module named '([\w.]+)'", proc.stderr)
        if proc.returncode != 0 and optional and missing:
            return self.record(name, "skipped", seconds, reason=f"{missing.group(1)} is not installed here")
        if proc.returncode != 0:
            return self.record(name, "fail", seconds, reason=f"exit status {proc.returncode}: {_last_line(proc)}")
        try:
            details = parse(proc.stdout) if parse else {}
        except Exception as error:  # noqa: BLE001 - an unreadable result fails this part only
            return self.record(name, "fail", seconds, reason=f"unreadable output ({error})")
        return self.record(name, "pass", seconds, details=details)

    def run_in_child(self, name: str, env=None) -> dict:
        result = self.out / f"{name}.json"
        result.unlink(missing_ok=True)
        command = [sys.executable, str(Path(__file__).resolve()), "--out", str(self.out), "--part", name,
                   "--corpus", str(self.args.corpus)] + (["--small"] if self.args.small else [])
        return self.run(name, command, parse=lambda stdout: json.loads(result.read_text()), env=env)

    def record(self, name: str, status: str, seconds: float, details: dict | None = None, reason: str = "") -> dict:
        self.parts[name] = {"status": status, "seconds": round(seconds, 1), **({"reason": reason} if reason else {}),
                            **{k: v for k, v in (details or {}).items() if k not in ("status", "seconds")}}
        self.note(f"---- {name}: {status} in {seconds:.1f} s {reason}")
        return self.parts[name]

    def note(self, text: str) -> None:
        self.log.write(text.rstrip() + "\n")
        self.log.flush()
        if self.args.verbose:
            print(text.rstrip(), flush=True)


def _text(value) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else (value or "")


def _last_line(proc) -> str:
    lines = (proc.stderr or proc.stdout or "").strip().splitlines()
    return lines[-1][:300] if lines else "(no output)"


def pytest_counts(stdout: str) -> dict:
    summary = stdout.strip().splitlines()[-1] if stdout.strip() else ""
    counts = {kind: int(n) for n, kind in re.findall(r"(\d+) (passed|failed|skipped|errors?)", summary)}
    return {"summary": summary, **counts}


def torch_result(stdout: str) -> dict:
    found = json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1])
    return {key: found.get(key) for key in ("torch", "params", "tokens_per_s", "train_loss", "val_loss",
                                            "peak_device_mib", "device")} | {"timed_seconds": found.get("seconds")}


def gradcheck_summary(stdout: str) -> dict:
    return {"summary": stdout.strip().splitlines()[-1]}


def pipeline_result(stdout_path: Path):
    def parse(stdout: str) -> dict:
        found = json.loads(stdout_path.read_text())
        return {"train_losses": found["train_losses"], "step": found["step"]}
    return parse


def run_check(args) -> int:
    check = Check(args)
    shape = SMALL if args.small else FULL
    check.run_in_child("environment")
    check.run_in_child("train", env=check.tf32_env)
    ref = next((p for p in (args.ref_script, REPO.parent / "shared" / "bench" / "ref_torch_gpt.py",
                            REPO.parent / "ref_torch_gpt.py", REPO / "ref_torch_gpt.py") if p and Path(p).is_file()), None)
    if ref is None:
        check.record("torch", "skipped", 0.0, reason="no reference script: pass --ref-script PATH to ref_torch_gpt.py")
    else:
        device = "cpu" if args.fake_cuda else "cuda"
        check.run("torch", [sys.executable, str(ref), "--data", str(args.corpus), "--layers", str(shape["n_layer"]),
                            "--heads", str(shape["n_head"]), "--dim", str(shape["n_embd"]),
                            "--ctx", str(shape["block_size"]), "--batch", str(shape["batch_size"]),
                            "--iters", str(shape["steps"]), "--warmup", "1", "--eval-iters", "1", "--device", device]
                  + (["--tf32"] if device == "cuda" else []), parse=torch_result, optional=True)
    check.run_in_child("decode", env=check.tf32_env)
    check.run("gradcheck", [sys.executable, "-m", "tinyllm.cli", "gradcheck", "--device", "cuda"]
              + (["attention", "layer_norm", "cross_entropy", "embedding"] if args.small else ["--model"]),
              parse=gradcheck_summary)
    tests = ["tests/device/test_host_copies.py"] if args.small else ["-k", "cuda", *DEVICE_TESTS]   # the [cuda] ids
    check.run("device_tests", [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
              parse=pytest_counts, env={**check.env, "TINYLLM_FAKE_CUDA": "1" if args.fake_cuda else "auto"})
    run_pipeline(check, shape)
    return write_report(check)


def run_pipeline(check: Check, shape: dict) -> None:
    beside = Path(sys.executable).parent / "mpiexec"          # the mpich wheel's, in this environment
    mpiexec = shutil.which("mpiexec") or (str(beside) if beside.is_file() else None)
    if mpiexec is None or check.parts["environment"].get("mpi4py", "not").startswith("not"):
        check.record("pipeline", "skipped", 0.0, reason="no mpiexec or mpi4py here (pip install 'tinyllm[mpi]')")
        return
    work = check.out / "pipeline"
    work.mkdir(exist_ok=True)
    config = dict(data=str(check.args.corpus), out=str(work / "run"), tokenizer="char", n_layer=2, n_head=shape["n_head"],
                  n_embd=shape["n_embd"], block_size=min(shape["block_size"], 256), batch_size=shape["batch_size"],
                  max_iters=3, eval_interval=3, eval_iters=1, warmup_iters=1, pipeline_stages=2, microbatches=4,
                  device="cuda", progress="log", log_interval=1)
    (work / "config.json").write_text(json.dumps(config))
    shutil.rmtree(work / "run", ignore_errors=True)
    check.run("pipeline", [mpiexec, "-n", "2", sys.executable, "-m", "parallel.runner", str(work / "config.json"),
                           "--result", str(work / "result.json")], parse=pipeline_result(work / "result.json"),
              env=check.tf32_env)


def write_report(check: Check) -> int:
    parts = check.parts
    report = {"check": "tinyllm bench/gpu_check.py", "version": 1, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
              "command": sys.argv, "fake_cuda": check.args.fake_cuda, "small": check.args.small,
              "gpu": parts.get("environment", {}).get("gpu"), "parts": parts,
              "total_seconds": round(time.monotonic() - check.started, 1)}
    ours, theirs = parts.get("train", {}), parts.get("torch", {})
    if ours.get("status") == theirs.get("status") == "pass" and theirs.get("tokens_per_s"):
        report["tinyllm_vs_torch"] = {
            "tokens_per_s": [ours["tokens_per_s"], theirs["tokens_per_s"]],
            "speed_ratio": round(ours["tokens_per_s"] / theirs["tokens_per_s"], 3),
            "peak_device_mib": [ours["peak_device_mib"], theirs.get("peak_device_mib")]}
    report["ok"] = all(part["status"] != "fail" for part in parts.values())
    (check.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
    width = max(len(name) for name in parts)
    for name, part in parts.items():
        shown = {k: v for k, v in part.items() if k in ("reason", "summary", "tokens_per_s", "peak_device_mib", "gpu",
                                                         "rows_1", "rows_8", "train_losses")}
        print(f"{name:<{width}}  {part['status']:<7} {part['seconds']:>6.1f} s  {json.dumps(shown)}", flush=True)
    print(f"report: {check.out / 'gpu_check.json'} (log: {check.out / 'gpu_check.log'}); "
          f"{'ok' if report['ok'] else 'FAILED'} in {report['total_seconds']:.0f} s", flush=True)
    return 0 if report["ok"] else 1


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for gpu_check.json, gpu_check.log and the runs")
    parser.add_argument("--fake-cuda", action="store_true", help="the CPU stand-in for CuPy instead of a GPU")
    parser.add_argument("--small", action="store_true", help="tiny shapes (CI)")
    parser.add_argument("--ref-script", type=Path, default=None,
                        help="ref_torch_gpt.py (default: ../shared/bench/ or next to the checkout)")
    parser.add_argument("--budget-s", type=float, default=330.0, help="the whole check's time limit")
    parser.add_argument("--verbose", action="store_true", help="echo the log while running")
    parser.add_argument("--part", choices=sorted(IN_CHILD), help=argparse.SUPPRESS)       # a child's own part
    parser.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.part:
        sys.path.insert(0, str(REPO))
        details = IN_CHILD[args.part](args)
        (out / f"{args.part}.json").write_text(json.dumps(details, indent=2) + "\n")
        return 0
    if args.fake_cuda:
        os.environ["TINYLLM_FAKE_CUDA"] = "1"
    args.corpus = make_corpus(out / "corpus.txt", (SMALL if args.small else FULL)["chars"],
                              vocab=200 if args.small else GPT2_VOCAB)
    return run_check(args)


if __name__ == "__main__":
    sys.exit(main())
