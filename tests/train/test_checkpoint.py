"""Checkpoints: round trip, atomicity under crashes, and errors that name the broken file."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from tinyllm import checkpoint as ckpt
from tinyllm.model import GPT, GPTConfig
from tinyllm.optim import AdamW
from tinyllm.tokenizer import CharTokenizer

CONFIG = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=16)
ROOT = Path(__file__).resolve().parents[2]


def make_run(seed=0):
    model = GPT(CONFIG, seed=seed, dtype="float64")
    opt = AdamW(list(model.named_parameters()), lr=1e-2, weight_decay=0.1)
    for _, p in model.named_parameters():
        p.grad = np.full(p.shape, 0.1)
    opt.step()
    return model, opt, CharTokenizer.train("abcdefghijk")


def save(run_dir, model, opt, tok, step, best=False):
    return ckpt.save_checkpoint(run_dir, model=model, optimizer=opt, tokenizer=tok, best=best,
                                state={"step": step, "model_config": model.config.to_dict()})


def test_round_trip_restores_weights_optimizer_and_tokenizer(tmp_path):
    model, opt, tok = make_run()
    path = save(tmp_path, model, opt, tok, step=3, best=True)
    assert os.path.realpath(tmp_path / "last") == os.path.realpath(path) == os.path.realpath(tmp_path / "best")
    loaded = ckpt.load_checkpoint(tmp_path)           # a run directory resolves to its `last`
    assert loaded.step == 3 and loaded.tokenizer().hash() == tok.hash()
    other, other_opt, _ = make_run(seed=1)
    ckpt.load_model_state(other, loaded)
    ckpt.load_optimizer_state(other_opt, loaded)
    for (name, p), (_, q) in zip(model.named_parameters(), other.named_parameters()):
        assert np.array_equal(p.data, q.data), name
    for key, value in opt.state_arrays().items():
        assert np.array_equal(value, other_opt.state_arrays()[key]), key
    assert other_opt.step_count == 1


def test_last_moves_best_stays_and_unreferenced_checkpoints_are_pruned(tmp_path):
    model, opt, tok = make_run()
    first = save(tmp_path, model, opt, tok, step=1, best=True)
    save(tmp_path, model, opt, tok, step=2)
    third = save(tmp_path, model, opt, tok, step=3)
    assert ckpt.load_checkpoint(tmp_path / "best").step == 1
    assert ckpt.load_checkpoint(tmp_path / "last").step == 3
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [first.name, third.name]


def test_failure_mid_save_leaves_the_previous_checkpoint_whole(tmp_path):
    model, opt, tok = make_run()
    save(tmp_path, model, opt, tok, step=1)
    for _, p in model.named_parameters():
        p.data += 1.0
    with pytest.raises(OSError, match="injected"):
        ckpt.save_checkpoint(tmp_path, model=model, optimizer=opt, tokenizer=tok, state={"step": 2},
                             fail_after_files=True)
    loaded = ckpt.load_checkpoint(tmp_path)
    assert loaded.step == 1
    assert not np.array_equal(loaded.model_state["wte.weight"], model.wte.weight.data)
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["step-0000001"]   # no staging left


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="reads fd paths from /proc")
def test_every_file_is_fsynced_and_state_json_last_before_the_directory_is_published(tmp_path, monkeypatch):
    model, opt, tok = make_run()
    synced, real_fsync, real_replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (synced.append(("replace", Path(a).name)), real_replace(a, b))[1])
    path = save(tmp_path, model, opt, tok, step=1)
    staging = Path(synced[0]).parent
    files = [Path(s).name for s in synced[:4]]
    assert sorted(files[:3]) == [ckpt.MODEL_FILE, ckpt.OPTIMIZER_FILE, ckpt.TOKENIZER_FILE] and files[3] == ckpt.STATE_FILE
    assert synced[4] == str(staging) and synced[5] == ("replace", staging.name)   # fsynced, then renamed whole
    records = json.loads((path / ckpt.STATE_FILE).read_text())["files"]
    assert records == {name: ckpt.write_staged_file(tmp_path / "copy", (path / name).read_bytes())
                       for name in files[:3]}


SAVER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import numpy as np
    from tinyllm import checkpoint as ckpt
    from tinyllm.model import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=64), dtype="float64")
    step = 0
    while True:
        step += 1
        for _, p in model.named_parameters():
            p.data[...] = step
        ckpt.save_checkpoint({run!r}, model=model, state={{"step": step}})
        print(step, flush=True)
""")


def test_killing_the_process_during_saves_never_breaks_last(tmp_path):
    """SIGKILL a process that saves in a loop, at several moments; `last` always loads whole."""
    run = tmp_path / "run"
    for delay in (0.3, 0.55):
        proc = subprocess.Popen([sys.executable, "-c", SAVER.format(root=str(ROOT), run=str(run))],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip()                      # at least one save finished
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        loaded = ckpt.load_checkpoint(run)
        values = {float(a.flat[0]) for a in loaded.model_state.values()}
        assert values == {float(loaded.step)}                      # every tensor from the same save


def test_truncated_corrupted_and_missing_files_are_named(tmp_path):
    model, opt, tok = make_run()
    path = save(tmp_path, model, opt, tok, step=1)
    weights = path / ckpt.MODEL_FILE
    original = weights.read_bytes()
    weights.write_bytes(original[: len(original) // 2])
    with pytest.raises(ckpt.CheckpointError, match=r"model\.safetensors: truncated"):
        ckpt.load_checkpoint(tmp_path)
    corrupted = bytearray(original)
    corrupted[-3] ^= 0xFF
    weights.write_bytes(bytes(corrupted))
    with pytest.raises(ckpt.CheckpointError, match=r"model\.safetensors: corrupted"):
        ckpt.load_checkpoint(tmp_path)
    weights.write_bytes(original)
    (path / ckpt.TOKENIZER_FILE).unlink()
    with pytest.raises(ckpt.CheckpointError, match=r"tokenizer\.json: file missing"):
        ckpt.load_checkpoint(tmp_path)
    (path / ckpt.STATE_FILE).write_text('{"format": "tinyllm-checkpoint", "vers')
    with pytest.raises(ckpt.CheckpointError, match=r"state\.json: not valid JSON"):
        ckpt.load_checkpoint(tmp_path)
    (path / ckpt.STATE_FILE).write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ckpt.CheckpointError, match="not a tinyllm checkpoint"):
        ckpt.load_checkpoint(tmp_path)
    with pytest.raises(ckpt.CheckpointError, match="no such directory"):
        ckpt.load_checkpoint(tmp_path / "nowhere")


def test_a_checkpoint_from_another_shape_is_refused_by_name(tmp_path):
    model, opt, tok = make_run()
    path = save(tmp_path, model, opt, tok, step=1)
    wider = GPT(GPTConfig(vocab_size=11, block_size=8, n_layer=2, n_head=2, n_embd=32))
    with pytest.raises(ckpt.CheckpointError) as error:
        ckpt.load_model_state(wider, ckpt.load_checkpoint(tmp_path))
    message = str(error.value)
    assert message.startswith(str(path / "model.safetensors") + ": ")   # the checkpoint `last` named, by its name
    assert "missing keys: blocks.1.norm1.weight" in message and " and 8 more" in message
    assert "shape mismatch for wte.weight: checkpoint (11, 16), model (11, 32)" in message
    assert message.endswith("the checkpoint was saved with a different model config") and "\n" not in message


def test_loading_never_unpickles(tmp_path):
    """The checkpoint holds only safetensors and JSON; a pickle dropped in is never read."""
    model, opt, tok = make_run()
    path = save(tmp_path, model, opt, tok, step=1)
    suffixes = {p.suffix for p in path.iterdir()}
    assert suffixes == {".safetensors", ".json"}
    import pickle
    (path / "evil.pkl").write_bytes(pickle.dumps(object()))
    real_loads = pickle.loads

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling during checkpoint load")
    pickle.loads = forbidden
    try:
        ckpt.load_checkpoint(tmp_path)
    finally:
        pickle.loads = real_loads
