"""Network weights read from files: the one loader behind export, the report's pictures and
upscale.

Every file here may come from anywhere (a run folder, a download, a typo on the command line), so
it is read with ``torch.load(weights_only=True)`` and nothing else allowed: tensors, plain
containers and numbers only. A file that would need any other object to unpickle is refused and
never run. What went wrong is said in the project's own words, naming the file and what was
expected: PyTorch's own message for a YAML file given as ``--weights`` advises re-running with
``weights_only=False``, which is wrong there and unsafe anywhere.

Two kinds of file hold weights: a trainer checkpoint (``trainer.pt``, ``checkpoint.pt``: the
network under ``"model"`` beside optimizer and RNG state) and a weights-only state dict
(``model.pt``, an export's ``<trial>.pt``). Both give a plain, prefix-free state dict checked
against the architecture it must fit.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from trainable.errors import InputError
from trainable.model import EarlyFusionESPCN

# torch.compile and DataParallel wrap a module; their state_dict keys carry these prefixes.
_PREFIXES = ("_orig_mod.", "module.")
_ZIP = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE = b"\x80"  # the legacy format: a bare pickle, protocol 2 or later


class WeightsError(InputError):
    """A file that is not the weights (or checkpoint) it was given as."""


def load_file(path: Path, expected: str = "a PyTorch weights file (.pt)") -> Any:
    """The file's content, loaded weights-only onto the CPU; `WeightsError` naming the file and
    what it is instead of ``expected``."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as e:
        raise WeightsError(f"{path}: cannot be read ({e.strerror or e})") from None
    if not (head.startswith(_ZIP) or head.startswith(_PICKLE)):
        raise WeightsError(f"{path}: is {_what_it_is(path, head)}, not {expected}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure is a bad file, never a crash
        raise WeightsError(f"{path}: {_refusal(e)}; expected {expected}") from None


def plain_state(weights: Mapping[str, Any], path: Path) -> dict[str, torch.Tensor]:
    """A state dict without wrapper prefixes, its tensors detached CPU copies."""
    state = {}
    for key, tensor in weights.items():
        if not isinstance(key, str) or not isinstance(tensor, torch.Tensor):
            raise WeightsError(f"{path}: {key!r} is not a named tensor; expected a state dict")
        for prefix in _PREFIXES:
            key = key.removeprefix(prefix)
        state[key] = tensor.detach().cpu().clone()
    return state


def network_state(saved: Any, path: Path) -> dict[str, torch.Tensor]:
    """The network's state dict in what `load_file` read: a weights-only state dict as it is, a
    trainer checkpoint's ``"model"``."""
    if isinstance(saved, Mapping) and isinstance(saved.get("model"), Mapping):
        saved = saved["model"]
    if not isinstance(saved, Mapping):
        raise WeightsError(f"{path}: holds a {type(saved).__name__}, not a network's state dict")
    return plain_state(saved, path)


def checkpoint_weights(path: Path, frames: int, scale: int, residual: bool
                       ) -> dict[str, torch.Tensor]:
    """The network's weights in a checkpoint (or a weights file), checked against the
    architecture."""
    state = network_state(load_file(path, "a trainer checkpoint (trainer.pt)"), path)
    build_model(state, frames, scale, residual, path)  # refuses weights that do not fit
    return state


def build_model(state: Mapping[str, torch.Tensor], frames: int, scale: int, residual: bool,
                path: Path) -> EarlyFusionESPCN:
    """An `EarlyFusionESPCN` holding ``state`` (strictly: every tensor, every shape)."""
    model = EarlyFusionESPCN(frames, scale, residual)
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{path}: the weights do not fit EarlyFusionESPCN(frames={frames}, "
                           f"scale={scale}): {_first_line(e)}") from None
    return model.eval()


def shape_of(state: Mapping[str, torch.Tensor], path: Path) -> tuple[int, int]:
    """(frames, scale) that a state dict's tensors were trained for."""
    if "body.0.weight" not in state or "sub_pixel.weight" not in state:
        raise WeightsError(f"{path}: not an EarlyFusionESPCN state dict (as "
                           "python -m analysis.export writes it)")
    return int(state["body.0.weight"].shape[1]), round(state["sub_pixel.weight"].shape[0] ** 0.5)


def _what_it_is(path: Path, head: bytes) -> str:
    if not head:
        return "empty"
    try:
        text = path.read_bytes()[:4096].decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return "a binary file of another format"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    if first.startswith(("{", "[")):
        kind = "JSON"
    elif ":" in first or first.startswith(("#", "---")):
        kind = "YAML"
    else:
        kind = "plain"
    return f"a {kind} text file" if kind != "plain" else "a text file"


def _refusal(e: BaseException) -> str:
    """What stopped torch.load's weights-only unpickler, without its advice to switch the safe
    loader off."""
    text = str(e)
    if "Unsupported global" in text:
        name = text.split("GLOBAL", 1)[1].split()[0] if "GLOBAL" in text else "another object"
        return (f"cannot be loaded safely (weights_only): it holds {name}, not only tensors, "
                "plain containers and numbers, so it was refused and never run")
    if "weights_only" in text or "Unpickl" in type(e).__name__:
        return "cannot be loaded safely (weights_only): it is not a file that torch.save wrote"
    return f"is damaged or cut short ({_first_line(e).split('. ')[0]})"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__
