"""Training on a device: the CPU's numbers (float64), the dropout generator, the NaN stop, AdamW and
clipping, and checkpoints that move between devices. Each test runs on [cpu] and [cuda] (real CuPy on
a GPU, else the CPU stand-in for CuPy: tests/conftest.py). Bitwise resume on the device, dropout
included, is tests/train/test_train.py's resume test, parametrised over devices."""
import numpy as np
import pytest

from autograd import Tensor, backend
from tinyllm import checkpoint as ckpt
from tinyllm.optim import AdamW, clip_grad_norm
from tinyllm.strategy import SingleProcess
from tinyllm.build import build_run
from tinyllm.loading import load_gpt
from tinyllm.train import Pretraining, train
from tinyllm.trainer import NonFiniteLossError


def host_weights(trainer) -> dict:
    return {name: backend.to_numpy(p.data) for name, p in trainer.model.named_parameters()}


def test_training_on_the_device_gives_the_cpu_numbers(tmp_path, corpus_file, tiny, device):
    settings = dict(dtype="float64", grad_accum=2, max_iters=6, eval_interval=3, threads=1)
    on_cpu = train(tiny(corpus_file, tmp_path / "cpu", **settings))
    on_device = train(tiny(corpus_file, tmp_path / "dev", device=device, **settings))
    np.testing.assert_allclose(on_device.train_losses, on_cpu.train_losses, rtol=1e-10, atol=0)
    for split in ("train", "val"):
        assert on_device.last_eval[split] == pytest.approx(on_cpu.last_eval[split], rel=1e-10)
    cpu_state, device_state = ckpt.load_checkpoint(tmp_path / "cpu"), ckpt.load_checkpoint(tmp_path / "dev")
    for name, expected in cpu_state.model_state.items():
        np.testing.assert_allclose(device_state.model_state[name], expected, rtol=0, atol=1e-10, err_msg=name)


def test_dropout_masks_differ_between_steps_and_repeat_by_seed(device):
    """The generator the masks come from outside a training step (and in the older "generator" scheme)."""
    from tinyllm.dropout import DropoutMasks
    first, again = DropoutMasks(3, device), DropoutMasks(3, device)
    draws = [backend.to_numpy(first.generator.random((4, 5))) for _ in range(2)]
    assert not np.array_equal(draws[0], draws[1])
    assert np.array_equal(backend.to_numpy(again.generator.random((4, 5))), draws[0])
    again.set_state(first.state())
    assert np.array_equal(backend.to_numpy(again.generator.random((4, 5))),
                          backend.to_numpy(first.generator.random((4, 5))))


def test_a_non_finite_loss_on_the_device_stops_before_the_update(tmp_path, corpus_file, tiny, device):
    trainer = build_run(tiny(corpus_file, tmp_path / "run", eval_interval=50, threads=1, device=device), Pretraining(),
                            log=lambda m: None)

    class Poisoned(SingleProcess):
        def gradients(self, model, task, batches, step=0):
            loss = super().gradients(model, task, batches, step)
            return loss * float("nan") if step == 3 else loss    # still on the device on a GPU
    trainer.strategy = Poisoned()
    trainer.train_step()
    trainer.train_step()
    before = host_weights(trainer)
    with pytest.raises(NonFiniteLossError, match="step 3: the loss is nan"):
        trainer.train_step()
    after = host_weights(trainer)
    assert trainer.step == 2 and all(np.array_equal(before[n], after[n]) for n in before)


def test_adamw_and_clipping_on_the_device_match_the_cpu(device):
    rng = np.random.default_rng(0)
    shapes = {"w": (5, 4), "b": (4,), "e": (7, 3)}
    values = {n: rng.standard_normal(s) for n, s in shapes.items()}
    grads = [{n: rng.standard_normal(s) * 10 for n, s in shapes.items()} for _ in range(3)]
    results = {}
    for where in ("cpu", device):
        params = [(n, Tensor(values[n].copy(), requires_grad=True, device=where)) for n in shapes]
        optimizer = AdamW(params, lr=1e-2, betas=(0.9, 0.99), weight_decay=0.1)
        norms = []
        for step_grads in grads:
            for n, p in params:
                p.grad = backend.to_device(step_grads[n].copy(), where)
            norms.append(clip_grad_norm([p for _, p in params], max_norm=1.0))
            optimizer.step()
        results[where] = ({n: backend.to_numpy(p.data) for n, p in params}, norms)
    assert results[device][1] == pytest.approx(results["cpu"][1], rel=1e-12)
    for n in shapes:
        np.testing.assert_allclose(results[device][0][n], results["cpu"][0][n], rtol=0, atol=1e-12)


def test_a_checkpoint_saved_on_the_device_loads_on_the_cpu_and_back(tmp_path, corpus_file, tiny, device):
    config = tiny(corpus_file, tmp_path / "run", dtype="float64", max_iters=3, eval_interval=3, device=device)
    train(config)
    ids = np.random.default_rng(0).integers(0, 16, (2, 8))
    logits = {}
    for where in ("cpu", device):
        model, checkpoint = load_gpt(tmp_path / "run", device=where)
        assert model.device == where and checkpoint.step == 3
        logits[where] = model(ids)[0].numpy()
        for name, p in model.named_parameters():
            np.testing.assert_array_equal(backend.to_numpy(p.data), checkpoint.model_state[name])
    np.testing.assert_allclose(logits[device], logits["cpu"], rtol=0, atol=1e-10)
    on_cpu, on_device = load_gpt(tmp_path / "run")[0], load_gpt(tmp_path / "run", device=device)[0]
    on_cpu.load_state_dict(on_device.state_dict())                          # device arrays into a CPU model
    on_device.load_state_dict(on_cpu.state_dict())                          # and host arrays back
    resumed = build_run(config.replace(resume=True, max_iters=4, device="cpu"), Pretraining(), log=lambda m: None)
    assert resumed.step == 3 and resumed.run().step == 4   # the device's checkpoint resumes on the CPU
