"""docs/architecture.md, "Where to change what", done once each: a new layer, strategy, task and command.

Each is added here, in this file alone, the way the page says, and then runs through the one
assembly line (tinyllm.build.build_run) or the command line like the parts that ship. (A new
schedule: tests/parallel/test_schedule_registry.py. A new op: docs/writing-ops.md, run by
tests/docs/.)
"""
import numpy as np
import pytest

from autograd import functional as F
from tinyllm import decode, nn
from tinyllm.build import OneMachine, build_run
from tinyllm.cli import main
from tinyllm.commands.common import UsageError, add_command
from tinyllm.strategy import SingleProcess
from tinyllm.train import Pretraining, PretrainingTask

QUIET = dict(log=lambda message: None)


# ---- a new layer: a module with one forward (and, to decode fast, an array_forward beside it) -----

class ScaledGELU(nn.Module):
    """gelu(x) * gamma, gamma a learned scale per hidden unit (starting at 1)."""

    def __init__(self, hidden: int):
        super().__init__()
        self.gamma = nn.current_build().constant((hidden,), 1.0)
        self.array_calls = 0

    def forward(self, x):
        return F.gelu(x) * self.gamma

    def array_forward(self, x):
        self.array_calls += 1
        return nn.run_on_array(nn.GELU(), x) * self.gamma.data


class WithScaledGELU(Pretraining):
    """Pretraining of a GPT whose MLPs use the new layer as their activation."""

    def build_model(self, settings):
        model = super().build_model(settings)
        with nn.build(settings.seed, settings.dtype, settings.device):
            for block in model.blocks:
                block.mlp.activation = ScaledGELU(block.mlp.c_fc.out_features)
        return model


def test_a_new_layer_trains_and_decodes_at_once(tmp_path, corpus_file, tiny):
    trainer = build_run(tiny(corpus_file, tmp_path / "run", max_iters=6, eval_interval=6, dtype="float64",
                             threads=1), WithScaledGELU(), **QUIET)
    result = trainer.run()
    assert result.train_losses[-1] < result.train_losses[0]
    gamma = dict(trainer.model.named_parameters())["blocks.0.mlp.activation.gamma"]
    assert not np.allclose(gamma.data, 1.0)                          # the optimizer trained it
    model = trainer.model.eval()
    idx = np.array([[1, 2, 3, 4, 5]])
    np.testing.assert_allclose(decode.forward(model, idx), model(idx)[0].data, rtol=0, atol=1e-12)
    assert model.blocks[0].mlp.activation.array_calls == 1          # decoding ran its array_forward


# ---- a new strategy: the Strategy methods, given to the run by a layout --------------------------

class ReversedAccumulation(SingleProcess):
    """One process, the micro-batches of a step accumulated from the last to the first (no dropout
    here; a strategy for a model with dropout opens tinyllm.dropout.dropout_rows around each forward)."""

    steps = 0

    def gradients(self, model, task, batches, step=None):
        type(self).steps += 1
        scale = 1.0 / len(batches)
        total = 0.0
        for batch in reversed(batches):
            loss = task.loss(model, batch)
            (loss * scale).backward()
            total += float(loss.item()) * scale
        return total


class ReversedLayout(OneMachine):
    def strategy(self, settings, model, optimizer):
        return ReversedAccumulation()


def test_a_new_strategy_runs_the_same_loop(tmp_path, corpus_file, tiny):
    settings = dict(max_iters=4, eval_interval=4, grad_accum=3, dtype="float64", threads=1)
    usual = build_run(tiny(corpus_file, tmp_path / "usual", **settings), Pretraining(), **QUIET).run()
    ours = build_run(tiny(corpus_file, tmp_path / "ours", **settings), Pretraining(), ReversedLayout(), **QUIET)
    result = ours.run()
    assert ReversedAccumulation.steps == 4
    np.testing.assert_allclose(result.train_losses, usual.train_losses, rtol=1e-12)   # another order of sums


# ---- a new task: batches, loss, weight, tokens, evaluation, its own state ---------------------------

class Backwards(PretrainingTask):
    """Read the corpus backwards: predict each token's predecessor (the same windows, reversed)."""

    def next_batch(self):
        x, y = super().next_batch()                      # (B, T): y is x shifted one ahead
        return np.ascontiguousarray(y[:, ::-1]), np.ascontiguousarray(x[:, ::-1])

    def checkpoint_entries(self) -> dict:
        return {"direction": "backwards"}


class ReadingBackwards(Pretraining):
    def task(self, settings, model):
        return Backwards(self.dataset.train, self.dataset.val, self.model_config.block_size,
                         settings.loop.batch_size, settings.loop.eval_iters, settings.seed)


def test_a_new_task_trains_checkpoints_and_resumes_exactly(tmp_path, corpus_file, tiny):
    from tinyllm import checkpoint as ckpt
    settings = dict(max_iters=6, eval_interval=3, dtype="float64", threads=1)
    straight = build_run(tiny(corpus_file, tmp_path / "a", **settings), ReadingBackwards(), **QUIET).run()
    assert straight.train_losses[-1] < straight.train_losses[0]
    assert ckpt.read_state(tmp_path / "a")["direction"] == "backwards"
    first = build_run(tiny(corpus_file, tmp_path / "b", **settings), ReadingBackwards(), **QUIET)
    first.run(stop_at=3)
    first.run_lock.release()
    resumed = build_run(tiny(corpus_file, tmp_path / "b", resume=True, **settings), ReadingBackwards(), **QUIET).run()
    assert straight.train_losses[3:] == resumed.train_losses          # bit for bit


# ---- a new command: a module with register(subparsers), named in tinyllm.cli.COMMAND_MODULES ------

def register(subparsers) -> None:
    """`tinyllm params --preset NAME`: the parameter count of a preset (this test module is the command)."""
    parser = add_command(subparsers, "params", "count a preset's parameters", "Print the parameter count of "
                         "a model preset, built on the meta device (nothing allocated).", "tinyllm params --preset gpt2")
    parser.add_argument("--preset", default="baby")
    parser.add_argument("--vocab-size", type=int, default=None)
    parser.set_defaults(handler=count_parameters)


def count_parameters(args) -> int:
    from tinyllm import GPT, GPTConfig
    if args.preset not in GPTConfig.presets():
        raise UsageError(f"--preset {args.preset!r}: use one of {', '.join(GPTConfig.presets())}")
    overrides = {} if args.vocab_size is None else {"vocab_size": args.vocab_size}
    print(f"{GPT.count_parameters(GPTConfig.preset(args.preset, **overrides)):,}")
    return 0


def test_a_new_command_is_one_module_named_in_the_list(capsys, monkeypatch):
    import tinyllm.cli
    monkeypatch.setattr(tinyllm.cli, "COMMAND_MODULES", tinyllm.cli.COMMAND_MODULES + (__name__,))
    assert main(["params", "--preset", "gpt2"]) == 0
    assert capsys.readouterr().out.strip() == "124,439,808"            # GPT-2 small, tied head
    assert main(["params", "--preset", "huge"]) == 2                   # the one error rule applies to it too
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("tinyllm params: error: --preset 'huge': use one of")
    with pytest.raises(SystemExit):
        main(["params", "--help"])
    assert "tinyllm params --preset gpt2" in capsys.readouterr().out   # its examples
