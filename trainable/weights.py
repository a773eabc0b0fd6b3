"""Network weights read from files: the one loader behind export, the report's pictures and
upscale.

Every file here may come from anywhere (a run folder, a download, a typo on the command line), so
it is read with ``torch.load(weights_only=True)`` and nothing else allowed: tensors, plain
containers and numbers only. A file that would need any other object to unpickle is refused and
never run. What went wrong is said in the project's own words, naming the file and what was
expected: PyTorch's own message for a YAML file given as ``--weights`` advises re-running with
``weights_only=False``, which is wrong there and unsafe anywhere.

Three kinds of file hold weights, each recognised by its keys:

- a trainer checkpoint (``trainer.pt``, ``checkpoint.pt``): the network under ``"model"`` beside
  optimizer and RNG state;
- a weights-only state dict (``model.pt``, an export's ``<trial>.pt``);
- a checkpoint of the source repository (eden-17-9311/espcn-vespcn, ``g_best.pth.tar``): the
  network under ``"state_dict"`` beside ``epoch``, ``best_psnr``, ``best_ssim`` (and
  ``optimizer``), its tensors named after that repository's ``model.ESPCN``
  (`SOURCE_NAMES`); a bare state dict in those names is taken too.

All give a plain, prefix-free state dict in `EarlyFusionESPCN`'s names, checked against the
architecture it must fit. `source_checkpoint` writes the source repository's format: the one
place that knows it, for export and import alike.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from trainable.errors import InputError
from trainable.model import EarlyFusionESPCN

if TYPE_CHECKING:
    from trainable.config import TrainConfig

# torch.compile and DataParallel wrap a module; their state_dict keys carry these prefixes.
_PREFIXES = ("_orig_mod.", "module.")
_ZIP = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE = b"\x80"  # the legacy format: a bare pickle, protocol 2 or later

# EarlyFusionESPCN's tensors under the source repository's names (its model.ESPCN: the two feature
# convs in `feature_maps`, an nn.Sequential with Tanh between them; the sub-pixel conv as
# `sub_pixel.0`, followed by the PixelShuffle). Same shapes, same order, same meaning: renamed,
# the two networks give the same output (the source clamps to [0, 1] inside forward(), ours in
# predict()).
SOURCE_NAMES = {
    "body.0.weight": "feature_maps.0.weight", "body.0.bias": "feature_maps.0.bias",
    "body.2.weight": "feature_maps.2.weight", "body.2.bias": "feature_maps.2.bias",
    "sub_pixel.weight": "sub_pixel.0.weight", "sub_pixel.bias": "sub_pixel.0.bias",
}
# The keys of a checkpoint that the source's train.py saves (save_checkpoint); its test.py reads
# only "state_dict", its pretrained loader too, its resume loader all of them.
SOURCE_CHECKPOINT_KEYS = ("epoch", "best_psnr", "best_ssim", "state_dict", "optimizer")
_FROM_SOURCE = {theirs: ours for ours, theirs in SOURCE_NAMES.items()}


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


@dataclass(frozen=True)
class Network:
    """Weights read from a file, in EarlyFusionESPCN's names, and what kind of file held them."""

    state: dict[str, torch.Tensor]
    kind: str  # "state dict" | "trainer checkpoint" | "source checkpoint"

    @property
    def from_source(self) -> bool:
        """From the source repository (its model has no global residual: residual=False)."""
        return self.kind == "source checkpoint"


def read_network(path: Path, expected: str = "a PyTorch weights file (.pt)") -> Network:
    """The network in any of the three kinds of weights file (see the module)."""
    return _network(load_file(path, expected), path)


def network_state(saved: Any, path: Path) -> dict[str, torch.Tensor]:
    """The network's state dict in what `load_file` read: a weights-only state dict as it is, a
    trainer checkpoint's ``"model"``, a source-repository checkpoint's ``"state_dict"`` renamed."""
    return _network(saved, path).state


def source_checkpoint(state: Mapping[str, torch.Tensor], *, epoch: int, best_psnr: float,
                      best_ssim: float) -> dict[str, Any]:
    """``state`` (EarlyFusionESPCN's names) as the source repository's train.py saves a
    checkpoint, without its optimizer state: what its test.py and its pretrained loader read.
    ``epoch``, ``best_psnr``, ``best_ssim`` are what its resume loader would take over."""
    missing = [k for k in SOURCE_NAMES if k not in state]
    if missing:
        raise ValueError(f"not an EarlyFusionESPCN state dict: {', '.join(missing)} missing")
    extra = [k for k in state if k not in SOURCE_NAMES]
    if extra:
        raise ValueError(f"the source repository's model has no {', '.join(extra)}")
    return {"epoch": int(epoch), "best_psnr": float(best_psnr), "best_ssim": float(best_ssim),
            "state_dict": {theirs: state[ours].detach().cpu().clone()
                           for ours, theirs in SOURCE_NAMES.items()}}


def initial_weights(path: Path, frames: int, scale: int, residual: bool,
                    key: str = "`init_weights`") -> dict[str, torch.Tensor]:
    """The weights that training starts from (``init_weights``), any kind of weights file,
    checked against the architecture; ``key`` names the setting in messages."""
    path = Path(path)
    try:
        network = read_network(path, "a weights file or checkpoint")
        build_model(network.state, frames, scale, residual, path)
    except WeightsError as e:
        raise WeightsError(f"{key}: {e}") from None
    if network.from_source and residual:
        raise WeightsError(f"{key}: {path}: is a source-repository checkpoint, whose network has "
                           "no global residual, but `residual` is true; set residual: false to "
                           "fine-tune it")
    return network.state


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
    fit = f"{path}: the weights do not fit EarlyFusionESPCN(frames={frames}, scale={scale})"
    for key, want in model.state_dict().items():
        if key not in state:
            raise WeightsError(f"{fit}: the layer {_layer(key)} is missing from the file")
        got = state[key].shape
        if got != want.shape:
            raise WeightsError(f"{fit}: the layer {_layer(key)} is {_dims(got)} in the file, "
                               f"but the model needs {_dims(want.shape)}")
    try:
        model.load_state_dict(dict(state), strict=True)
    except RuntimeError as e:
        raise WeightsError(f"{fit}: {_first_line(e)}") from None
    return model.eval()


def model_from_file(path: Path, config: TrainConfig | None, config_path: Path | None = None,
                    expected: str = "a weights file or checkpoint") -> EarlyFusionESPCN:
    """The network in ``path``, built as ``config`` (read from ``config_path``) says: a layer of
    another shape is named, with both shapes. Without a config only a source checkpoint will do
    (frames and scale then come from its tensors): its network never has the global residual,
    while a file of ours says nothing of it."""
    network = read_network(path, expected)
    if config is None:
        if not network.from_source:
            raise WeightsError(f"{path}: is a {network.kind} of espcn-tune, whose `residual` "
                               "setting the tensors do not show: give the config exported or "
                               "trained beside it (--config)")
        frames, scale = shape_of(network.state, path)
        return build_model(network.state, frames, scale, False, path)
    if network.from_source and config.residual:
        raise WeightsError(f"{config_path}: says residual=True, but {path} is a source-repository "
                           "checkpoint, whose network has no global residual")
    try:
        return build_model(network.state, config.frames, config.scale, config.residual, path)
    except WeightsError as e:
        raise WeightsError(f"{config_path}: {e}") from None


def shape_of(state: Mapping[str, torch.Tensor], path: Path) -> tuple[int, int]:
    """(frames, scale) that a state dict's tensors were trained for."""
    if "body.0.weight" not in state or "sub_pixel.weight" not in state:
        raise WeightsError(f"{path}: not an EarlyFusionESPCN state dict (as "
                           "python -m analysis.export writes it)")
    return int(state["body.0.weight"].shape[1]), round(state["sub_pixel.weight"].shape[0] ** 0.5)


def _network(saved: Any, path: Path) -> Network:
    """What `load_file` read, recognised by its keys."""
    if isinstance(saved, Mapping) and isinstance(saved.get("model"), Mapping):
        return Network(plain_state(saved["model"], path), "trainer checkpoint")
    if isinstance(saved, Mapping) and "state_dict" in saved:
        inner = saved["state_dict"]
        if not isinstance(inner, Mapping):
            raise WeightsError(f"{path}: its `state_dict` holds a {type(inner).__name__}, not a "
                               "network's state dict")
        return Network(_from_source(plain_state(inner, path), path), "source checkpoint")
    if not isinstance(saved, Mapping):
        raise WeightsError(f"{path}: holds a {type(saved).__name__}, not a network's state dict")
    state = plain_state(saved, path)
    if any(k in _FROM_SOURCE for k in state):
        return Network(_from_source(state, path), "source checkpoint")
    return Network(state, "state dict")


def _from_source(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """A state dict in the source repository's names, in EarlyFusionESPCN's."""
    unknown = [k for k in state if k not in _FROM_SOURCE]
    if unknown:
        raise WeightsError(f"{path}: {unknown[0]!r} is not a layer of the source repository's "
                           f"ESPCN (its layers: {', '.join(SOURCE_NAMES.values())})")
    return {_FROM_SOURCE[k]: v for k, v in state.items()}


def _layer(key: str) -> str:
    """A layer's name here, with the source repository's name for it."""
    theirs = SOURCE_NAMES.get(key)
    return f"{key} (the source repository's {theirs})" if theirs else key


def _dims(shape: torch.Size) -> str:
    return "x".join(map(str, shape)) if len(shape) else "a scalar"


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
