"""The pipeline's flags: one line naming the flag and the fix for a bad combination (exit 2), no MPI needed."""
import pytest

from tinyllm.cli import main
from tinyllm.train import ConfigError, TrainConfig


@pytest.mark.parametrize("settings,message", [
    (dict(schedule="pipedream"), "--schedule 'pipedream': must be one of gpipe, 1f1b, interleaved, zb-h1"),
    (dict(schedule="1f1b", virtual_stages=2), "--virtual-stages 2: needs --schedule interleaved"),
    (dict(schedule="interleaved", virtual_stages=0), "--virtual-stages 0: must be a positive integer"),
    (dict(zero=2, data_parallel=2), "--zero 2: must be 0 (off) or 1"),
    (dict(zero=1, pipeline_stages=2), "--zero 1: shards the optimizer state across data-parallel replicas: use it "
                                      "with --data-parallel 2 or more"),
    (dict(recompute=True), "--recompute True: runs in pipeline stages"),
])
def test_bad_settings_name_the_flag(settings, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        TrainConfig(**settings)


def test_chunks_default_to_two_for_interleaved_only():
    assert TrainConfig(schedule="interleaved").pipeline_chunks == 2
    assert TrainConfig(schedule="interleaved", virtual_stages=3).pipeline_chunks == 3
    assert TrainConfig(schedule="zb-h1", virtual_stages=1).pipeline_chunks == 1


def test_the_command_line_takes_recompute_as_a_switch(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--out", "r", "--recompute", "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0
    assert err.startswith("tinyllm train: error:") and "--recompute True: runs in pipeline stages" in err
