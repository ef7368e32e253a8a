"""tinyllm.io: every write is atomic, durable and gets open()'s permissions."""
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file

from tinyllm import io

ROOT = Path(__file__).resolve().parents[2]


def leftovers(folder: Path, name: str) -> list:
    """Temporary files of `name` still in `folder`."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(name + ".") and p.name.endswith(".tmp"))


def record_syscalls(monkeypatch) -> list:
    """Log ("fsync", "file"|"dir", path) and ("replace", src, dst), in call order."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        kind = "dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file"
        events.append(("fsync", kind, os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return events


WRITERS = {
    "write_bytes": lambda path: io.write_bytes(path, b"new"),
    "write_json": lambda path: io.write_json(path, {"b": 1, "a": [1, 2]}),
    "write_tensors": lambda path: io.write_tensors(path, {"w": np.ones((2, 3), np.float32)}),
}


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads fd paths from /proc")
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_each_writer_fsyncs_the_file_renames_it_in_place_then_fsyncs_the_folder(tmp_path, monkeypatch, writer):
    target = tmp_path / "out"
    target.write_bytes(b"old")
    events = record_syscalls(monkeypatch)
    WRITERS[writer](target)
    (_, kind, synced), (_, src, dst), (_, dir_kind, dir_synced) = events
    assert (kind, dir_kind) == ("file", "dir")
    assert synced == src and Path(src).parent == tmp_path and dst == str(target)   # temp file beside the target
    assert dir_synced == str(tmp_path)
    assert leftovers(tmp_path, "out") == []


def test_write_json_and_write_tensors_write_what_they_say(tmp_path):
    io.write_json(tmp_path / "a.json", {"b": 1, "a": "é"})
    text = (tmp_path / "a.json").read_text(encoding="utf-8")
    assert text == '{\n  "a": "\\u00e9",\n  "b": 1\n}\n' and json.loads(text) == {"a": "é", "b": 1}
    arrays = {"z": np.arange(6.0).reshape(2, 3), "a": np.asfortranarray(np.eye(3, dtype=np.float32))}
    io.write_tensors(tmp_path / "t.safetensors", arrays, metadata={"format": "pt"})
    loaded = load_file(tmp_path / "t.safetensors")
    assert sorted(loaded) == ["a", "z"] and all(np.array_equal(loaded[k], arrays[k]) for k in arrays)
    assert io.tensor_bytes(arrays) == io.tensor_bytes(dict(reversed(list(arrays.items()))))  # order-free bytes


@pytest.mark.parametrize("failure", ["bad data", "fsync fails", "rename fails"])
def test_a_failure_mid_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, failure):
    target = tmp_path / "config.json"
    target.write_text("old")
    if failure == "fsync fails":
        monkeypatch.setattr(os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    if failure == "rename fails":
        monkeypatch.setattr(os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError(18, "Invalid cross-device link")))
    with pytest.raises((OSError, TypeError)):
        io.write_bytes(target, object() if failure == "bad data" else b"new")
    assert target.read_text() == "old" and leftovers(tmp_path, "config.json") == []


def test_atomic_file_publishes_only_on_a_clean_exit(tmp_path):
    target = tmp_path / "shard.bin"
    with pytest.raises(RuntimeError):
        with io.AtomicFile(target) as out:
            out.file.write(b"half")
            raise RuntimeError("crash in the middle")
    assert not target.exists() and leftovers(tmp_path, "shard.bin") == []
    with io.AtomicFile(target) as out:
        out.file.write(b"whole")
        assert not target.exists()                   # nothing under the name until commit
    assert target.read_bytes() == b"whole"


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=["umask022", "umask077", "umask002"])
def test_files_get_open_permissions_under_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        for name, write in WRITERS.items():
            write(tmp_path / name)
        with io.AtomicFile(tmp_path / "streamed") as out:
            out.file.write(b"x")
        mode = io.default_mode(directory=True)
        assert os.umask(umask) == umask              # reading the umask put it back
    finally:
        os.umask(old)
    for name in [*WRITERS, "streamed"]:
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name
    assert mode == 0o777 & ~umask


def test_missing_folders_are_created(tmp_path):
    io.write_bytes(tmp_path / "a" / "b" / "c.txt", b"deep")
    assert (tmp_path / "a" / "b" / "c.txt").read_bytes() == b"deep"


def test_a_kill_during_rewrites_leaves_one_whole_version(tmp_path):
    """SIGKILL a process that keeps rewriting a 2 MB file: the file is always one whole version."""
    target = tmp_path / "big.bin"
    io.write_bytes(target, b"a" * 2_000_000)
    script = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {str(ROOT)!r})
        from tinyllm import io
        print("ready", flush=True)
        while True:
            for byte in (b"b", b"a"):
                io.write_bytes({str(target)!r}, byte * 2_000_000)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    data = target.read_bytes()
    assert len(data) == 2_000_000 and data in (b"a" * 2_000_000, b"b" * 2_000_000)
