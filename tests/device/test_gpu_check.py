"""bench/gpu_check.py end to end on the CPU stand-in with tiny shapes, as CI runs it, so the
script is known to work before a GPU ever runs it. A stub stands in for the PyTorch reference
trainer (no PyTorch here): it prints the reference's JSON line, so the comparison is exercised."""
import json
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

STUB_REFERENCE = '''
import argparse, json
p = argparse.ArgumentParser()
for flag in ("--data", "--layers", "--heads", "--dim", "--ctx", "--batch", "--iters", "--warmup", "--eval-iters",
             "--device"):
    p.add_argument(flag)
p.add_argument("--tf32", action="store_true")
a = p.parse_args()
assert a.device == "cpu" and not a.tf32      # the stand-in's check runs the reference on the CPU
print(json.dumps({"impl": "torch", "torch": "stub", "params": 1, "iters": int(a.iters), "seconds": 1.0,
                  "tokens_per_s": 100.0, "train_loss": 5.3, "val_loss": 5.3, "device": a.device,
                  "peak_device_mib": None}))
'''


def test_the_gpu_check_runs_end_to_end_on_the_stand_in(tmp_path):
    stub = tmp_path / "ref_torch_gpt.py"
    stub.write_text(STUB_REFERENCE)
    out = tmp_path / "check"
    proc = subprocess.run([sys.executable, "bench/gpu_check.py", "--out", str(out), "--fake-cuda", "--small",
                           "--ref-script", str(stub)], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["ok"], proc.stdout
    parts = report["parts"]
    expected = ["environment", "train", "torch", "decode", "gradcheck", "device_tests", "pipeline"]
    assert list(parts) == expected
    has_mpi = shutil.which("mpiexec") or (Path(sys.executable).parent / "mpiexec").is_file()
    assert all(parts[name]["status"] == "pass" for name in expected if name != "pipeline" or has_mpi), parts
    assert parts["environment"]["cuda_backend"] == "stand-in" and report["fake_cuda"] and report["small"]
    assert parts["train"]["tokens_per_s"] > 0 and len(parts["train"]["losses"]) == 3
    assert parts["decode"]["rows_8"]["new_tokens_per_s"] > 0
    assert "all 4 checks passed (float64 on cuda" in parts["gradcheck"]["summary"]
    assert parts["device_tests"]["passed"] > 0 and "failed" not in parts["device_tests"]
    assert report["tinyllm_vs_torch"]["tokens_per_s"] == [parts["train"]["tokens_per_s"], 100.0]
    log = (out / "gpu_check.log").read_text()
    assert "==== train" in log and "---- device_tests: pass" in log
