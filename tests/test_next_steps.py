"""Each command ends with the next one (issue 20, item 12): export -> upscale, python -m trainable
-> upscale, upscale -> the other view; and --compare frames carry a label on each half."""

from __future__ import annotations

import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests import run_fixture as fx
from tests.test_upscale import H, W, _export, _frames, _run
from trainable.upscale import COMPARE_LABELS, compare_frame, label_patch
from trainable.upscale import main as upscale_main


def _suggested(out: str, prefix: str) -> list[str]:
    """The argv after ``prefix`` of the one printed line that holds it."""
    (line,) = [ln for ln in out.splitlines() if prefix in ln]
    return shlex.split(line.split(prefix, 1)[1])


def test_export_ends_with_the_upscale_command_for_what_it_wrote(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from analysis.export import main

    run = fx.write_small_run(tmp_path)
    assert main([str(run)]) == 0
    argv = _suggested(capsys.readouterr().out, "python -m trainable.upscale")
    weights, config = Path(argv[argv.index("--weights") + 1]), argv[argv.index("--config") + 1]
    assert weights == run / "export" / f"{fx.WINNER}.pt" and weights.is_file()
    assert Path(config) == weights.with_suffix(".yaml") and "--compare" in argv
    # A trial that kept no weights: the command that trains its exported config instead.
    assert main([str(run), "--trial", fx.trial_id(2)]) == 0
    argv = _suggested(capsys.readouterr().out, "python -m trainable ")
    assert argv[:2] == ["--config", str(run / "export" / f"{fx.trial_id(2)}.yaml")]


def test_training_ends_with_the_upscale_command_for_its_weights(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from trainable.__main__ import _next_step

    out = tmp_path / "train"
    out.mkdir()
    assert _next_step(out) is None  # no weights written (diverged): nothing to suggest
    (out / "model.pt").write_bytes(b"")
    argv = shlex.split(_next_step(out).split(":  ", 1)[1])
    assert argv[:3] == ["python", "-m", "trainable.upscale"]
    assert argv[argv.index("--weights") + 1] == str(out / "model.pt")
    assert argv[argv.index("--config") + 1] == str(out / "config.yaml")


def test_upscale_suggests_the_other_view_and_that_command_runs(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    weights, config = _export(tmp_path, correction=0.1)
    src = tmp_path / "pngs"
    src.mkdir()
    for k, f in enumerate(_frames(), start=1):
        Image.fromarray(f).save(src / f"f{k}.png")
    assert _run(weights, config, src, tmp_path / "up") == 0
    argv = _suggested(capsys.readouterr().out, "python -m trainable.upscale")
    assert "--compare" in argv and argv[argv.index("--out") + 1] == str(tmp_path / "up-compare")
    assert upscale_main([*argv, "--device", "cpu"]) == 0
    frame = np.asarray(Image.open(tmp_path / "up-compare" / "frame_000001.png"))
    assert frame.shape == (4 * H, 8 * W, 3)
    back = _suggested(capsys.readouterr().out, "python -m trainable.upscale")
    assert "--compare" not in back and back[back.index("--out") + 1] == str(tmp_path / "up")


def test_compare_frames_label_each_half(tmp_path: Path) -> None:
    """A residual network that adds nothing draws bicubic: the two halves differ only where the
    labels are, "bicubic" on the left and "espcn-tune" on the right, each in its own half."""
    weights, config = _export(tmp_path, correction=0.0)
    src = tmp_path / "pngs"
    src.mkdir()
    for k, f in enumerate(_frames(), start=1):
        Image.fromarray(f).save(src / f"f{k}.png")
    assert _run(weights, config, src, tmp_path / "plain") == 0
    assert _run(weights, config, src, tmp_path / "cmp", "--compare") == 0
    plain = np.asarray(Image.open(tmp_path / "plain" / "frame_000002.png"))
    labelled = np.asarray(Image.open(tmp_path / "cmp" / "frame_000002.png"))
    assert np.array_equal(labelled, compare_frame(plain, plain))
    changed = np.any(labelled != np.concatenate([plain, plain], axis=1), axis=2)
    for k, text in enumerate(COMPARE_LABELS):  # the box of each label, in its own half
        half = changed[:, k * plain.shape[1] : (k + 1) * plain.shape[1]]
        rows, cols = np.nonzero(half)
        patch = label_patch(text, plain.shape[0])
        assert rows.min() >= 0 and rows.max() < 2 + patch.shape[0]
        assert cols.max() - cols.min() + 1 == min(patch.shape[1], plain.shape[1] - 2)
