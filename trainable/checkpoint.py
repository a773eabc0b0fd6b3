"""Device-agnostic pieces of a training checkpoint: RNG states, the AMP scaler, a model's weights.

A checkpoint is always read onto the CPU (``torch.load(map_location="cpu")``) and each part is then
moved where it belongs, so one written on a GPU resumes on a CPU and the other way round:

- the CPU torch RNG state is always saved and restored (``torch.set_rng_state`` accepts only a
  CPU ``ByteTensor``: mapping the file to the GPU, as this code once did, made every resume on
  CUDA fail; mapping to ``"meta"`` reproduces that failure on a CPU);
- the CUDA RNG state of the training device is saved under its own key when training on CUDA and
  restored only there;
- the GradScaler state travels between fp16, bf16 and fp32: a disabled scaler (fp32, bf16, or
  fp16 off CUDA) saves ``{}``; an enabled one given ``{}`` starts fresh, and a disabled one
  ignores whatever it is given.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

log = logging.getLogger(__name__)

# torch.compile wraps a module as `_orig_mod`; its state_dict keys carry this prefix.
_COMPILED_PREFIX = "_orig_mod."


def rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    """The torch RNG states that a resumed run on ``device`` needs, as CPU tensors."""
    state = {"torch_rng": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda_rng"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: Mapping[str, Any], device: torch.device) -> None:
    """Restore what :func:`rng_state` saved; a CUDA state only when training on CUDA again."""
    torch.set_rng_state(_cpu_bytes(state["torch_rng"]))
    if device.type == "cuda" and "cuda_rng" in state:
        torch.cuda.set_rng_state(_cpu_bytes(state["cuda_rng"]), device)
    elif device.type == "cuda":
        log.info("the checkpoint was written off CUDA: the CUDA RNG keeps its current state")


def load_scaler(scaler: torch.amp.GradScaler, state: Mapping[str, Any]) -> None:
    """Load a GradScaler state saved under any AMP setting or device."""
    if not scaler.is_enabled():
        return  # fp32/bf16 (or fp16 off CUDA's scaler): nothing to restore
    if not state:
        # Saved by a disabled scaler (fp32, bf16, or a CPU run): start at the initial scale, as a
        # fresh fp16 run does. GradScaler.load_state_dict would raise on `{}`.
        log.info("the checkpoint has no GradScaler state (saved without fp16): starting fresh")
        return
    scaler.load_state_dict(dict(state))


# Which kernel an optimizer runs, chosen for the device it was built on (fused on CUDA, plain on
# the CPU). Optimizer.load_state_dict copies them from the checkpoint's param_groups like any
# hyper-parameter: a CPU checkpoint then turned a fused CUDA optimizer back into the foreach one,
# while the GradScaler, which looks at the optimizer as built, still handed it its scale, and the
# first step raised (found on an H100).
_IMPLEMENTATION_KEYS = ("fused", "foreach", "capturable", "differentiable")


def load_optimizer(optimizer: torch.optim.Optimizer, state: Mapping[str, Any]) -> None:
    """Load an optimizer state saved on any device, keeping this optimizer's own kernel choice.

    A tensor LR (``cuda_graph``) stays the same tensor, given the saved value: load_state_dict
    would put the checkpoint's number (or its own tensor) in its place, and the StepGraph writes
    the live one. A fused or capturable optimizer gets its step counts as float32 on the
    parameters' device, as torch keeps them for those kernels (load_state_dict decides by the
    *saved* groups' flags, so a CPU checkpoint left them CPU tensors)."""
    keep = [{k: g[k] for k in _IMPLEMENTATION_KEYS if k in g} for g in optimizer.param_groups]
    lrs = [g["lr"] for g in optimizer.param_groups]
    optimizer.load_state_dict(dict(state))  # moves its state to the parameters' device
    for group, own, lr in zip(optimizer.param_groups, keep, lrs, strict=True):
        group.update(own)
        if isinstance(lr, torch.Tensor):
            with torch.no_grad():
                lr.fill_(float(group["lr"]))
            group["lr"] = lr
        if group.get("fused") or group.get("capturable"):
            for p in group["params"]:
                step = optimizer.state.get(p, {}).get("step")
                if isinstance(step, torch.Tensor):
                    optimizer.state[p]["step"] = step.to(dtype=torch.float32, device=p.device)


def model_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The weights of ``model`` without torch.compile's wrapper prefix."""
    raw = getattr(model, "_orig_mod", model)
    return raw.state_dict()


def plain_keys(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop torch.compile's ``_orig_mod.`` prefix, for checkpoints saved from a compiled model."""
    return {k.removeprefix(_COMPILED_PREFIX): v for k, v in weights.items()}


def _cpu_bytes(t: torch.Tensor) -> torch.Tensor:
    return t.to("cpu", torch.uint8) if t.device.type != "cpu" or t.dtype != torch.uint8 else t
