"""The pipeline's flags: one line naming the flag and the fix for a bad combination (exit 2), no MPI needed."""
import re

import pytest

from parallel.schedules import check_pipeline_settings, chunks_per_stage
from tinyllm.cli import main
from tinyllm.fields import ConfigError
from tinyllm.settings import RunSettings


@pytest.mark.parametrize("settings,message", [
    (dict(schedule="interleaved", virtual_stages=0), "--virtual-stages 0: must be a positive integer"),
    (dict(zero=2, data_parallel=2), "--zero 2: must be 0 (off) or 1"),
    (dict(zero=1, pipeline_stages=2), "--zero 1: shards the optimizer state across data-parallel replicas: use it "
                                      "with --data-parallel 2 or more"),
    (dict(recompute=True), "--recompute True: runs in pipeline stages"),
])
def test_bad_settings_name_the_flag(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        RunSettings.of(**settings)


@pytest.mark.parametrize("settings,message", [
    (dict(schedule="pipedream"), "--schedule 'pipedream': unknown schedule 'pipedream': use one of gpipe, 1f1b, "
                                 "interleaved, zb-h1"),
    (dict(schedule="1f1b", virtual_stages=2), "--virtual-stages 2: needs a schedule with chunks (interleaved); "
                                              "the schedule is 1f1b"),
])
def test_the_schedule_registry_checks_the_schedule_flags(settings, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_pipeline_settings(RunSettings.of(**settings).pipeline)


def test_chunks_default_to_the_schedules_own_count():
    assert chunks_per_stage(RunSettings.of(schedule="interleaved").pipeline) == 2
    assert chunks_per_stage(RunSettings.of(schedule="interleaved", virtual_stages=3).pipeline) == 3
    assert chunks_per_stage(RunSettings.of(schedule="zb-h1", virtual_stages=1).pipeline) == 1


def test_the_command_line_checks_the_schedule_in_one_process_too(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--out", "r", "--schedule", "pipedream", "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0 and "--schedule 'pipedream': unknown schedule" in err
    assert not (tmp_path / "r").exists()


def test_the_command_line_takes_recompute_as_a_switch(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["train", "--out", "r", "--recompute", "--progress", "none"])
    err = capsys.readouterr().err
    assert code == 2 and err.strip().count("\n") == 0
    assert err.startswith("tinyllm train: error:") and "--recompute True: runs in pipeline stages" in err
