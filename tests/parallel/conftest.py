"""Fixtures of the mpiexec tests: a small corpus and the single-process runs every pipelined run must equal."""
import numpy as np
import pytest
from .mpi_runs import single_process


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    rng = np.random.default_rng(0)
    letters = np.array(list("abcdefghijklmnop \n"))
    path.write_text("".join(rng.choice(letters, size=3000)))
    return str(path)


@pytest.fixture(scope="session")
def references(corpus, tmp_path_factory):
    """tie_embeddings -> (RunResult, checkpoint) of the 4-step single-process run."""
    root = tmp_path_factory.mktemp("reference")
    return {tied: single_process(corpus, root / f"tied-{tied}", tie_embeddings=tied) for tied in (True, False)}
