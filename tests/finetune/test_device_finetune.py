"""LoRA finetuning on a device: classification and instruction runs give the CPU's numbers
(float64), the adapters and their file come back to the CPU. Each test runs on [cpu] and [cuda]
(real CuPy on a GPU, else the CPU stand-in for CuPy: tests/conftest.py)."""
import json

import numpy as np
import pytest

from autograd import backend
from tinyllm.finetune import FinetuneConfig, finetune, load_finetuned
from tinyllm.lora import lora_state_dict, read_lora
from tinyllm.settings import RunSettings


def run(config, out, device):
    return finetune(config, RunSettings.of(out=str(out), max_iters=3, eval_interval=3, eval_iters=1, batch_size=8,
                                           lr=3e-3, warmup_iters=1, dtype="float64", progress="none", threads=1,
                                           device=device))


@pytest.mark.parametrize("task", ["classify", "instruct"])
def test_lora_finetuning_on_the_device_gives_the_cpu_numbers(make_base, keyword_data, copy_data, tmp_path, device,
                                                             task):
    data, template = keyword_data, "alpaca"
    if task == "instruct":
        data, template = copy_data, tmp_path / "short.json"
        template.write_text(json.dumps({"with_input": "{instruction}: {input}\n", "without_input": "{instruction}\n"}))
    config = FinetuneConfig(task=task, init_from=str(make_base(dtype="float64")), data=str(data), val_fraction=0.2,
                            test_fraction=0.1, template=str(template), lora_rank=2, lora_alpha=4.0,
                            lora_targets=("attn", "mlp"))
    on_cpu, on_device = run(config, tmp_path / "cpu", "cpu"), run(config, tmp_path / "dev", device)
    np.testing.assert_allclose(on_device.train_losses, on_cpu.train_losses, rtol=1e-10, atol=0)
    for name, value in on_cpu.test.items():
        assert on_device.test[name] == pytest.approx(value, rel=1e-9), name
    adapters = read_lora(tmp_path / "dev" / "adapter").arrays                # saved from the device, read on the host
    for name, expected in read_lora(tmp_path / "cpu" / "adapter").arrays.items():
        np.testing.assert_allclose(adapters[name], expected, rtol=0, atol=1e-10, err_msg=name)
    finetuned = load_finetuned(tmp_path / "dev", device=device)
    assert all(backend.device_of(a) == device for a in lora_state_dict(finetuned.model).values())
