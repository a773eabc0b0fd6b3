"""CUDA-only checks (skipped without a CUDA device; see conftest.py). Written on a CPU machine;
first run on an H100 in the session recorded in BENCHMARKS.md, "GPU"."""

import pytest
import torch

from trainable.config import TrainConfig
from trainable.loop import Trainer

pytestmark = pytest.mark.gpu

TINY = dict(epochs=4, epoch_samples=64, batch_size=8, validation_interval=1, patch_size=8,
            num_threads=1, device="cuda")
FP16 = dict(use_amp=True, amp_dtype="float16")


@pytest.fixture(autouse=True)
def _deterministic_cudnn(monkeypatch):
    # Resume exactness is compared bit for bit: cuDNN must not pick algorithms by timing.
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)


def _trainer(tiny_train, tiny_val, **over):
    return Trainer(TrainConfig(**{**TINY, **over}), tiny_train, tiny_val)


def _same_params(a, b):
    return all(torch.equal(x.cpu(), y.cpu()) for x, y in zip(a.model.parameters(),
                                                              b.model.parameters(), strict=True))


def test_a_trainer_on_cuda_gets_an_indexed_device_and_sizes_its_data_by_the_memory_share(
        tiny_train, tiny_val):
    # Found on the first H100 run: a bare 'cuda' device made the memory-share query raise, so no
    # Trainer could be built on a GPU at all.
    tr = _trainer(tiny_train, tiny_val, **FP16)
    assert tr.device.index == torch.cuda.current_device()
    assert torch.cuda.get_per_process_memory_fraction(tr.device) > 0
    assert tr.sampler.gathers_on_device  # a few KiB of frames fit any share of the card


def test_cuda_fp16_round_trip_with_an_active_scaler_resumes_exactly(tiny_train, tiny_val, tmp_path):
    straight = _trainer(tiny_train, tiny_val, **FP16)
    assert straight.scaler.is_enabled() and straight.sampler.gathers_on_device
    assert straight.optimizer.defaults.get("fused")
    straight.run()
    first = _trainer(tiny_train, tiny_val, **FP16)
    first.run_interval()
    first.save(tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert "cuda_rng" in state and state["sampler"]["kind"] == "torch-chunks"
    resumed = _trainer(tiny_train, tiny_val, seed=9, **FP16)
    resumed.load(tmp_path / "state.pt")
    assert resumed.scaler.state_dict() == first.scaler.state_dict()
    resumed.run()
    assert _same_params(resumed, straight)
    assert [h["psnr"] for h in resumed.history] == [h["psnr"] for h in straight.history]


@pytest.mark.parametrize("amp", [dict(use_amp=False), dict(use_amp=True, amp_dtype="bfloat16")])
def test_a_cpu_checkpoint_resumes_on_cuda_and_back(tiny_train, tiny_val, tmp_path, amp):
    cpu = _trainer(tiny_train, tiny_val, device="cpu", **amp)
    cpu.run_interval()
    cpu.save(tmp_path / "cpu.pt")
    gpu = _trainer(tiny_train, tiny_val, **FP16)
    gpu.load(tmp_path / "cpu.pt")  # an enabled scaler given `{}` starts fresh
    assert gpu.epoch == 1
    gpu.run_interval()
    gpu.save(tmp_path / "gpu.pt")
    back = _trainer(tiny_train, tiny_val, device="cpu", **amp)
    back.load(tmp_path / "gpu.pt")
    assert back.epoch == 2 and _same_params(back, gpu)
    back.run_interval()


def test_data_time_is_measured_with_cuda_events(tiny_train, tiny_val):
    tr = _trainer(tiny_train, tiny_val, **FP16)
    stats = tr.train_until(64)
    assert stats.updates == 8 and 0 < stats.data_seconds < stats.seconds


def test_compile_trains_on_cuda_and_saves_plain_keys(tiny_train, tiny_val, tmp_path):
    tr = _trainer(tiny_train, tiny_val, compile=True, **FP16)
    result = tr.run_interval()
    assert result.status == "running" and result.loss == result.loss  # finite, not NaN
    tr.save(tmp_path / "state.pt")
    plain = _trainer(tiny_train, tiny_val, **FP16)
    plain.load(tmp_path / "state.pt")
    assert _same_params(plain, tr)
