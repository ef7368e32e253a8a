"""Shared fixtures for the training tests: a small generated corpus and tiny run configs."""
import numpy as np
import pytest

from tinyllm.settings import RunSettings


def make_text(n_lines: int = 400, seed: int = 0) -> str:
    """Deterministic text with learnable structure: short words from a small alphabet."""
    rng = np.random.default_rng(seed)
    words = ["the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "to", "it"]
    lines = [" ".join(rng.choice(words, size=6)) + "." for _ in range(n_lines)]
    return "\n".join(lines) + "\n"


@pytest.fixture
def corpus_file(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text(make_text(), encoding="utf-8")
    return path


def tiny_config(data, out, **overrides) -> RunSettings:
    """A 1-layer, 32-wide model on block 16: a step takes milliseconds."""
    settings = dict(data=str(data), out=str(out), n_layer=1, n_head=2, n_embd=32, block_size=16, batch_size=4,
                    max_iters=20, eval_interval=10, eval_iters=2, log_interval=5, warmup_iters=2, lr=3e-3,
                    min_lr=3e-4, progress="none")
    settings.update(overrides)
    return RunSettings.of(**settings)


@pytest.fixture(scope="session")
def text_maker():
    return make_text


@pytest.fixture
def tiny():
    return tiny_config

