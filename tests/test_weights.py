"""trainable.weights: the one loader of network weights, safe and in the project's own words."""

from __future__ import annotations

import pathlib
from pathlib import Path

import pytest
import torch

from trainable import weights
from trainable.model import EarlyFusionESPCN


def _refusal(path: Path) -> str:
    with pytest.raises(weights.WeightsError) as e:
        weights.load_file(path)
    text = str(e.value)
    assert text.startswith(str(path)) and "\n" not in text
    assert "weights_only set to False" not in text and "Re-running" not in text
    return text


def test_a_pickle_needing_another_global_is_refused_and_never_run(tmp_path: Path) -> None:
    path = tmp_path / "x.pt"
    torch.save({"model": {"w": torch.zeros(1)}, "where": pathlib.PurePosixPath("/x")}, path)
    text = _refusal(path)
    assert "PurePosixPath" in text and "never run" in text


def test_a_damaged_file_is_said_to_be_damaged(tmp_path: Path) -> None:
    good = tmp_path / "good.pt"
    torch.save(EarlyFusionESPCN().state_dict(), good)
    cut = tmp_path / "cut.pt"
    cut.write_bytes(good.read_bytes()[:200])
    assert "damaged or cut short" in _refusal(cut)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    assert "cannot be read" in _refusal(tmp_path / "nope.pt")


@pytest.mark.parametrize("prefix", ["", "_orig_mod.", "module."])
def test_checkpoint_weights_are_plain_and_fit_the_architecture(tmp_path: Path, prefix: str) -> None:
    model = EarlyFusionESPCN(3, 4, residual=True)
    path = tmp_path / "trainer.pt"
    torch.save({"model": {prefix + k: v for k, v in model.state_dict().items()}}, path)
    state = weights.checkpoint_weights(path, 3, 4, True)
    assert state.keys() == model.state_dict().keys()
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    with pytest.raises(weights.WeightsError, match="do not fit EarlyFusionESPCN"):
        weights.checkpoint_weights(path, 5, 4, True)
