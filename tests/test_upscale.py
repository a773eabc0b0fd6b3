"""python -m trainable.upscale: video and frame-folder outputs, --compare, tiles, every refusal."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from PIL import Image

from analysis.config_files import render
from trainable.config import TrainConfig
from trainable.imaging import rgb_to_cbcr, rgb_to_y, upscale_bicubic, ycbcr_to_rgb
from trainable.model import EarlyFusionESPCN
from trainable.upscale import COMPARE_LABELS, label_patch, main, upscale_y, windows

W, H, N = 40, 32, 5  # LR frame size (even, for yuv420p) and frame count
RATE = Fraction(12)


def _frames(n: int = N) -> list[np.ndarray]:
    """Moderate-contrast moving stripes in colour (Y between about 0.35 and 0.65)."""
    yy, xx = np.mgrid[0:H, 0:W]
    out = []
    for t in range(n):
        g = 128 + 40 * np.sin((xx + 2 * t) / 3.0) * np.cos(yy / 5.0)
        out.append(np.stack([g, g * 0.9 + 20, 255 - g], axis=-1).clip(0, 255).astype(np.uint8))
    return out


def _write_video(path: Path, frames: list[np.ndarray]) -> Path:
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=RATE)
        s.width, s.height, s.pix_fmt = W, H, "yuv420p"
        for f in frames:
            c.mux(s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        c.mux(s.encode())
    return path


def _decode(path: Path) -> tuple[list[np.ndarray], Fraction]:
    with av.open(str(path)) as c:
        stream = c.streams.video[0]
        return [f.to_ndarray(format="rgb24") for f in c.decode(stream)], stream.average_rate


def _export(tmp: Path, *, residual: bool = True, frames: int = 3, scale: int = 4,
            correction: float = 0.0, name: str = "w", weights_from: dict | None = None
            ) -> tuple[Path, Path]:
    """W.pt and W.yaml as analysis.export writes them. ``correction``: a constant the residual
    network adds to bicubic (its sub-pixel weights zeroed). A plain network gets a bias of 0.5 so
    it draws an image-like grey, as a trained plain network draws the image."""
    torch.manual_seed(0)
    model = EarlyFusionESPCN(frames, scale, residual)
    with torch.no_grad():
        if residual:
            model.sub_pixel.weight.zero_()
            model.sub_pixel.bias.fill_(correction)
        else:
            model.sub_pixel.bias.fill_(0.5)
    weights = tmp / f"{name}.pt"
    torch.save(weights_from or model.state_dict(), weights)
    config = TrainConfig.from_dict({"frames": frames, "scale": scale, "residual": residual})
    yaml_path = tmp / f"{name}.yaml"
    yaml_path.write_text(render("yaml", config.to_dict(), {"run": "test", "weights": weights.name}))
    return weights, yaml_path


@pytest.fixture
def exported(tmp_path: Path) -> tuple[Path, Path]:
    return _export(tmp_path, correction=0.1)


@pytest.fixture
def video(tmp_path: Path) -> Path:
    return _write_video(tmp_path / "clip.mp4", _frames())


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    d = tmp_path / "pngs"
    d.mkdir()
    for k, f in enumerate(_frames(), start=1):
        Image.fromarray(f).save(d / f"f{k}.png")  # f10 would sort after f9
    return d


def _run(weights: Path, config: Path, src: Path, out: Path, *extra: str) -> int:
    return main(["--weights", str(weights), "--config", str(config), str(src), "--out", str(out),
                 "--device", "cpu", *extra])


def test_video_in_video_out_at_the_input_rate(exported, video: Path, tmp_path: Path) -> None:
    out = tmp_path / "up.mp4"
    assert _run(*exported, video, out) == 0
    frames, rate = _decode(out)
    assert len(frames) == N and frames[0].shape == (4 * H, 4 * W, 3)
    assert rate == RATE
    assert not list(tmp_path.glob(".*partial*"))


def test_folder_in_png_frames_out_in_natural_order(exported, folder: Path, tmp_path: Path) -> None:
    out = tmp_path / "up"
    assert _run(*exported, folder, out) == 0
    written = sorted(out.glob("frame_*.png"))
    assert [p.name for p in written] == [f"frame_{k:06d}.png" for k in range(1, N + 1)]
    assert np.asarray(Image.open(written[0])).shape == (4 * H, 4 * W, 3)


def test_y_comes_from_the_network_and_colour_from_bicubic(folder: Path, tmp_path: Path) -> None:
    # A residual network that adds nothing is bicubic: both halves of --compare are equal. One
    # that adds 0.1 raises Y by 25.5 levels and leaves Cb/Cr as they are.
    for correction, name in ((0.0, "zero"), (0.1, "plus")):
        weights, config = _export(tmp_path, correction=correction, name=name)
        out = tmp_path / f"cmp_{name}"
        assert _run(weights, config, folder, out, "--compare") == 0
        rgb = np.asarray(Image.open(out / "frame_000003.png"))
        assert rgb.shape == (4 * H, 8 * W, 3)
        left, right = rgb[:, : 4 * W].copy(), rgb[:, 4 * W :].copy()
        # Each half's label (test_next_steps) covers its top-left corner: left out here.
        box = max(label_patch(t, 4 * H).shape[0] for t in COMPARE_LABELS) + 2
        left[:box], right[:box] = 0, 0
        y_gain = rgb_to_y(right).astype(float) - rgb_to_y(left).astype(float)
        cbcr_change = np.abs(rgb_to_cbcr(right) - rgb_to_cbcr(left))
        if correction == 0.0:
            assert np.array_equal(left, right)
        else:
            assert abs(np.median(y_gain) - 25.5) <= 1.0
            assert np.median(cbcr_change) <= 1.0


def test_tiled_output_equals_untiled_exactly() -> None:
    torch.manual_seed(3)
    model = EarlyFusionESPCN(3, 4, residual=True).eval()
    with torch.no_grad():
        model.sub_pixel.weight.mul_(300.0)  # a visible correction, not the init's near-zero one
    lr = torch.rand(1, 3, 37, 45)
    whole = upscale_y(model, lr)
    bicubic = upscale_bicubic(lr[:, 1:2], 4).clamp(0, 1)
    assert (whole - bicubic).abs().mean() > 0.01  # the network changes the picture
    # oneDNN picks its convolution algorithm by input size, which moves the last float bit
    # (~3e-6); with the plain convolution the overlap arithmetic shows: equal to the bit.
    with torch.backends.mkldnn.flags(enabled=False):
        whole = upscale_y(model, lr)
        for tile in (16, 17, 30):
            assert torch.equal(upscale_y(model, lr, tile), whole), tile


def test_tiles_without_the_overlap_would_differ() -> None:
    # The overlap is what makes tiles exact: cutting the frame with no overlap changes pixels.
    torch.manual_seed(3)
    model = EarlyFusionESPCN(3, 4, residual=True).eval()
    with torch.no_grad():
        model.sub_pixel.weight.mul_(300.0)
    lr = torch.rand(1, 3, 32, 32)
    whole = upscale_y(model, lr)
    halves = torch.cat([model.predict(lr[..., :16]), model.predict(lr[..., 16:])], dim=-1)
    assert not torch.equal(halves, whole)


def test_windows_are_clamped_at_both_ends() -> None:
    frames = [np.full((1, 1), k) for k in range(4)]
    got = [[int(f[0, 0]) for f in win] for _, win in windows(iter(frames), 5)]
    assert got == [[0, 0, 0, 1, 2], [0, 0, 1, 2, 3], [0, 1, 2, 3, 3], [1, 2, 3, 3, 3]]
    assert [[int(f[0, 0]) for f in w] for _, w in windows(iter(frames[:1]), 3)] == [[0, 0, 0]]


def test_colour_round_trip_is_within_one_level() -> None:
    rgb = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    back = ycbcr_to_rgb(rgb_to_y(rgb), rgb_to_cbcr(rgb))
    assert np.abs(back.astype(int) - rgb).max() <= 1


# --- refusals: exit 2 and one line naming the file -------------------------------------------------
def _refused(capsys: pytest.CaptureFixture[str], rc: int, name: str) -> str:
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and err.startswith("error: "), err
    assert name in err, err
    return err


def test_refuses_an_unreadable_video(exported, tmp_path: Path, capsys) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    _refused(capsys, _run(*exported, bad, tmp_path / "o.mp4"), "broken.mp4")


def test_refuses_a_missing_input_and_an_empty_folder(exported, tmp_path: Path, capsys) -> None:
    _refused(capsys, _run(*exported, tmp_path / "nope.mp4", tmp_path / "o.mp4"), "nope.mp4")
    (tmp_path / "empty").mkdir()
    _refused(capsys, _run(*exported, tmp_path / "empty", tmp_path / "o"), "empty")


def test_refuses_a_corrupt_frame(exported, folder: Path, tmp_path: Path, capsys) -> None:
    # Found mid-run, under the progress bar: one error line, no traceback.
    (folder / "f3.png").write_bytes(b"garbage")
    assert _run(*exported, folder, tmp_path / "o") == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and "f3.png" in lines[0] and "Traceback" not in err


@pytest.mark.parametrize("key,value", [("frames", 5), ("scale", 2)])
def test_refuses_a_config_whose_shape_does_not_fit(key, value, video: Path, tmp_path: Path,
                                                   capsys) -> None:
    weights, _ = _export(tmp_path, correction=0.1)
    _, config = _export(tmp_path, correction=0.1, name="other", **{key: value})
    err = _refused(capsys, _run(weights, config, video, tmp_path / "o.mp4"), "other.yaml")
    assert f"{key}={value}" in err and "w.pt" in err


@pytest.mark.parametrize("weights_residual", [True, False])
def test_refuses_a_config_with_the_other_residual(weights_residual: bool, video: Path,
                                                  tmp_path: Path, capsys) -> None:
    weights, _ = _export(tmp_path, residual=weights_residual, correction=0.02)
    _, config = _export(tmp_path, residual=not weights_residual, name="other")
    err = _refused(capsys, _run(weights, config, video, tmp_path / "o.mp4"), "other.yaml")
    assert f"residual={not weights_residual}" in err


def test_a_plain_network_with_its_own_config_runs(video: Path, tmp_path: Path) -> None:
    weights, config = _export(tmp_path, residual=False)
    assert _run(weights, config, video, tmp_path / "plain") == 0


def test_refuses_weights_that_are_not_a_state_dict(video: Path, tmp_path: Path, capsys) -> None:
    _, config = _export(tmp_path)
    bad = tmp_path / "bad.pt"
    torch.save({"something": torch.zeros(1)}, bad)
    _refused(capsys, _run(bad, config, video, tmp_path / "o.mp4"), "bad.pt")


def test_refuses_an_existing_out_without_force(exported, video: Path, tmp_path: Path,
                                               capsys) -> None:
    out = tmp_path / "taken.mp4"
    out.write_bytes(b"keep me")
    _refused(capsys, _run(*exported, video, out), "taken.mp4")
    assert out.read_bytes() == b"keep me"
    assert _run(*exported, video, out, "--force") == 0
    assert len(_decode(out)[0]) == N


def test_refuses_an_unknown_output_suffix(exported, video: Path, tmp_path: Path, capsys) -> None:
    _refused(capsys, _run(*exported, video, tmp_path / "o.gif"), "o.gif")


@pytest.mark.parametrize("kind", ["yaml", "json", "binary", "empty"])
def test_a_file_that_is_not_weights_is_named_in_our_words(kind: str, exported, video: Path,
                                                          tmp_path: Path, capsys) -> None:
    # The config given where the weights go (an easy slip): PyTorch's own message advises
    # weights_only=False, which is wrong for a text file and unsafe for any.
    content = {"yaml": b"model_lr: 0.01\nbatch_size: 16\n", "json": b'{"model_lr": 0.01}\n',
               "binary": bytes(range(7, 200)), "empty": b""}[kind]
    bad = tmp_path / f"not_weights.{kind}"
    bad.write_bytes(content)
    err = _refused(capsys, _run(bad, exported[1], video, tmp_path / "o.mp4"), bad.name)
    assert "weights_only" not in err and "Re-running" not in err
    said = {"yaml": "YAML text file", "json": "JSON text file", "binary": "binary file",
            "empty": "empty"}[kind]
    assert said in err and "export" in err


def test_a_trainer_checkpoint_is_accepted_as_weights(exported, video: Path, tmp_path: Path) -> None:
    weights, config = exported
    checkpoint = tmp_path / "checkpoint.pt"
    torch.save({"model": torch.load(weights, weights_only=True), "optimizer": {}}, checkpoint)
    assert _run(checkpoint, config, video, tmp_path / "from_checkpoint.mp4") == 0
