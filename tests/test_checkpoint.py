"""Checkpoints that travel: read onto the CPU whatever the trainer's device, RNG states per device,
the GradScaler state across fp16/bf16/fp32, torch.compile's key prefix."""

import pytest
import torch

from trainable.checkpoint import load_optimizer, load_scaler, plain_keys, rng_state
from trainable.config import TrainConfig
from trainable.loop import Trainer

TINY = dict(epochs=4, epoch_samples=64, batch_size=8, validation_interval=1, use_amp=False,
            patch_size=8, num_threads=1)
FP16 = dict(use_amp=True, amp_dtype="float16")  # an active GradScaler, on the CPU too


def _trainer(tiny_train, tiny_val, **over):
    return Trainer(TrainConfig(**{**TINY, **over}), tiny_train, tiny_val)


def _same_params(a, b):
    return all(torch.equal(x, y) for x, y in zip(a.model.parameters(), b.model.parameters(),
                                                  strict=True))


def test_a_checkpoint_loads_onto_the_cpu_whatever_the_trainers_device(tiny_train, tiny_val,
                                                                        tmp_path):
    path = tmp_path / "state.pt"
    straight = _trainer(tiny_train, tiny_val)
    straight.run()
    first = _trainer(tiny_train, tiny_val)
    first.run_interval()
    first.save(path)
    # The old crash: the file mapped to the trainer's device leaves the RNG state there, and
    # torch.set_rng_state takes only a CPU ByteTensor ("meta" stands in for CUDA on a CPU).
    mapped = torch.load(path, map_location="meta", weights_only=True)
    with pytest.raises((TypeError, RuntimeError)):
        torch.set_rng_state(mapped["torch_rng"])
    resumed = _trainer(tiny_train, tiny_val, seed=5)
    resumed.device = torch.device("meta")  # what load() used to map to
    resumed.load(path)
    resumed.device = torch.device("cpu")
    resumed.run()
    assert _same_params(resumed, straight)


def test_fp16_with_an_active_scaler_resumes_exactly(tiny_train, tiny_val, tmp_path):
    straight = _trainer(tiny_train, tiny_val, **FP16)
    assert straight.scaler.is_enabled()
    straight.run()
    first = _trainer(tiny_train, tiny_val, **FP16)
    first.run_interval()
    first.save(tmp_path / "state.pt")
    resumed = _trainer(tiny_train, tiny_val, **FP16)
    resumed.load(tmp_path / "state.pt")
    # Scale and growth tracker (8 updates without an inf) are restored, not fresh.
    assert resumed.scaler.state_dict() == first.scaler.state_dict()
    assert resumed.scaler.state_dict()["_growth_tracker"] == 8
    resumed.run()
    assert _same_params(resumed, straight)
    # A scale that moved away from the initial one survives too.
    first.scaler.update(new_scale=1024.0)
    first.save(tmp_path / "moved.pt")
    resumed.load(tmp_path / "moved.pt")
    assert resumed.scaler.get_scale() == 1024.0


@pytest.mark.parametrize("writer", [dict(use_amp=False), dict(use_amp=True, amp_dtype="bfloat16")])
def test_a_checkpoint_without_fp16_resumes_under_fp16_with_a_fresh_scaler(tiny_train, tiny_val,
                                                                          tmp_path, writer):
    first = _trainer(tiny_train, tiny_val, **writer)
    first.run_interval()
    first.save(tmp_path / "state.pt")
    assert torch.load(tmp_path / "state.pt", weights_only=True)["scaler"] == {}
    fp16 = _trainer(tiny_train, tiny_val, **FP16)
    fresh = fp16.scaler.get_scale()
    fp16.load(tmp_path / "state.pt")  # GradScaler.load_state_dict({}) would raise here
    assert fp16.scaler.get_scale() == fresh
    assert fp16.epoch == 1 and _same_params(fp16, first)
    fp16.run_interval()
    assert fp16.epoch == 2


def test_an_fp16_checkpoint_resumes_without_a_scaler(tiny_train, tiny_val, tmp_path):
    first = _trainer(tiny_train, tiny_val, **FP16)
    first.run_interval()
    first.save(tmp_path / "state.pt")
    assert torch.load(tmp_path / "state.pt", weights_only=True)["scaler"]["scale"] > 0
    fp32 = _trainer(tiny_train, tiny_val)
    fp32.load(tmp_path / "state.pt")
    assert not fp32.scaler.is_enabled() and _same_params(fp32, first)


def test_scaler_rules_directly():
    enabled = torch.amp.GradScaler("cpu", enabled=True, init_scale=8.0)
    load_scaler(enabled, {})
    assert enabled.get_scale() == 8.0
    donor = torch.amp.GradScaler("cpu", enabled=True, init_scale=32.0)
    load_scaler(enabled, donor.state_dict())
    assert enabled.get_scale() == 32.0
    disabled = torch.amp.GradScaler("cpu", enabled=False)
    load_scaler(disabled, donor.state_dict())
    assert disabled.state_dict() == {}


def test_cuda_rng_is_saved_only_on_cuda_and_ignored_elsewhere(tiny_train, tiny_val, tmp_path):
    assert set(rng_state(torch.device("cpu"))) == {"torch_rng"}
    tr = _trainer(tiny_train, tiny_val)
    state = tr.state_dict()
    assert "cuda_rng" not in state
    # A checkpoint written on a GPU carries the CUDA state too; a CPU run leaves it alone.
    state["cuda_rng"] = torch.zeros(16, dtype=torch.uint8)
    other = _trainer(tiny_train, tiny_val)
    other.load_state_dict(state)
    assert torch.equal(torch.get_rng_state(), state["torch_rng"])


def test_compiled_models_save_plain_keys_and_prefixed_checkpoints_load(tiny_train, tiny_val):
    tr = _trainer(tiny_train, tiny_val, compile=True)
    assert tr._step_model is not tr.model  # the step runs the compiled wrapper
    keys = list(tr.state_dict()["model"])
    assert keys and not any(k.startswith("_orig_mod.") for k in keys)
    # A checkpoint saved from a compiled module (as nanoGPT does) still loads.
    prefixed = {f"_orig_mod.{k}": v + 1 for k, v in tr.model.state_dict().items()}
    state = {**tr.state_dict(), "model": prefixed}
    plain = _trainer(tiny_train, tiny_val)
    plain.load_state_dict(state)
    assert torch.equal(next(iter(plain.model.state_dict().values())),
                       next(iter(plain_keys(prefixed).values())))


def test_an_optimizer_state_from_another_device_keeps_this_optimizers_kernel():
    # A CPU checkpoint (foreach, not fused) resumed by a fused CUDA optimizer: plain
    # load_state_dict copied `fused: None` over, and the GradScaler's fused step then raised.
    src = torch.nn.Parameter(torch.ones(3))
    cpu_built = torch.optim.Adam([src], lr=2e-3, foreach=True)
    src.grad = torch.ones(3)
    cpu_built.step()
    state = cpu_built.state_dict()

    plain = torch.optim.Adam([torch.nn.Parameter(torch.ones(3))], lr=1e-3, fused=True)
    plain.load_state_dict(state)
    assert not plain.param_groups[0]["fused"]  # what torch does by itself

    dst = torch.nn.Parameter(torch.ones(3))
    fused = torch.optim.Adam([dst], lr=1e-3, fused=True)
    load_optimizer(fused, state)
    group = fused.param_groups[0]
    assert group["fused"] is True and not group["foreach"]
    assert group["lr"] == 2e-3  # the hyper-parameters still come from the checkpoint
    assert torch.equal(fused.state[dst]["exp_avg"], cpu_built.state[src]["exp_avg"])
    dst.grad = torch.ones(3)
    fused.step()  # runs the fused kernel
