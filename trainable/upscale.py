"""``python -m trainable.upscale --weights W.pt --config W.yaml INPUT --out OUT``: apply exported
weights to a video or a folder of frames.

INPUT is a video file (anything PyAV decodes) or a folder of images (sorted by name, numbers in
natural order). Each frame is split into BT.601 studio-range Y, Cb, Cr (the Y the network was
trained on): Y comes from the network, fed the ``frames``-long window centred on the frame (clamped
at the ends of the input); Cb and Cr come from the bicubic upscale. OUT with a video suffix
(``.mp4``, ``.mkv``, ``.mov``, ``.avi``) is a video at the input's frame rate (libx264 where PyAV
has it, else mpeg4); OUT without a suffix is a folder of PNG frames. ``--compare`` writes bicubic
(left) and the network (right) side by side, each half labelled ("bicubic", "espcn-tune").

W.pt is the weights-only state dict and W.yaml the config that ``python -m analysis.export``
writes; a source-repository checkpoint (``g_best.pth.tar``, recognised by its keys) runs without
``--config``. The network runs on the GPU when there is one, in tiles of ``--tile`` LR pixels (each
overlapping its neighbours by the network's receptive field, so the result equals the untiled one),
and in tiles anyway when a whole frame does not fit in GPU memory.

Exit status: 0 written; 1 a file could not be written; 2 bad input (an unreadable input, config
or weights file, a config that does not fit the weights, an existing OUT without --force).
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from trainable.errors import InputError
from trainable.imaging import rgb_to_cbcr, rgb_to_y, upscale_bicubic, ycbcr_to_rgb
from trainable.loop import resolve_device
from trainable.metrics import to_uint8
from trainable.model import EarlyFusionESPCN
from trainable.progress import Progress

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# LR pixels each output pixel depends on at each side: conv5x5, conv3x3, conv3x3 (2 + 1 + 1); the
# residual's bicubic needs only 2. A tile that overlaps its neighbours by this much computes its
# own pixels exactly as the whole frame does.
RECEPTIVE_RADIUS = 4
_MIN_TILE = 16
_FOLDER_FPS = Fraction(25)  # frames in a folder carry no rate
COMPARE_LABELS = ("bicubic", "espcn-tune")  # the halves of a --compare frame, left to right


@dataclass(frozen=True)
class Clip:
    """A readable input: its frames (uint8 RGB, one at a time), their count if known, the rate."""

    path: Path
    count: int | None
    rate: Fraction
    frames: Iterator[np.ndarray]


def load_model(weights: Path, config_path: Path | None) -> EarlyFusionESPCN:
    """The exported network, checked against its config (frames and scale from the tensors'
    shapes; ``residual`` is checked on the first frame, see :func:`check_residual`). A source-
    repository checkpoint needs no config: its network is always plain."""
    from trainable import weights as weights_file
    from trainable.config_file import load_config

    cfg = None if config_path is None else load_config(config_path, [])
    return weights_file.model_from_file(
        weights, cfg, config_path, "an EarlyFusionESPCN state dict (the <trial>.pt that python -m "
        "analysis.export writes) or a source-repository checkpoint (.pth.tar)")


def check_residual(model: EarlyFusionESPCN, window: torch.Tensor, weights: Path,
                   config_path: Path) -> None:
    """``residual`` leaves no trace in the weights' shapes, so look at what the network draws: a
    residual network's own output is a small correction around 0, a plain one's is the image
    itself (near the bicubic upscale). Refuse only a clear mismatch (one twice as near)."""
    t = window.shape[1]
    with torch.no_grad():
        raw = model.shuffle(model.sub_pixel(model.body(window)))
        bicubic = upscale_bicubic(window[:, t // 2 : t // 2 + 1], model.scale)
    to_zero = raw.abs().mean().item()
    to_image = (raw - bicubic).abs().mean().item()
    looks_residual = to_zero * 2 < to_image
    looks_plain = to_image * 2 < to_zero
    if (model.residual and looks_plain) or (not model.residual and looks_residual):
        drawn = "the image itself" if looks_plain else "a correction to bicubic"
        raise InputError(f"{config_path}: says residual={model.residual}, but the weights in "
                         f"{weights} draw {drawn} (residual={not model.residual})")


def open_input(path: Path) -> Clip:
    """A video file or a folder of images; InputError naming ``path`` when it cannot be read."""
    if path.is_dir():
        files = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES),
                       key=lambda p: _natural(p.name))
        if not files:
            raise InputError(f"{path}: no image files ({', '.join(IMAGE_SUFFIXES)}) in the folder")
        return Clip(path, len(files), _FOLDER_FPS, _read_images(files))
    if not path.exists():
        raise InputError(f"{path}: no such file or folder")
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate or _FOLDER_FPS
            count = stream.frames or None
    except av.FFmpegError as e:
        raise InputError(f"{path}: cannot be read as a video ({e})") from None
    return Clip(path, count, Fraction(rate), _read_video(path))


def upscale_y(model: EarlyFusionESPCN, lr: torch.Tensor, tile: int | None = None) -> torch.Tensor:
    """(1, frames, h, w) in [0, 1] -> (1, 1, h*scale, w*scale) clamped, in tiles of ``tile`` LR
    pixels (None: the whole frame). Every tile sees ``RECEPTIVE_RADIUS`` pixels of its neighbours,
    so the result is the untiled one: to the bit with PyTorch's plain convolution; oneDNN and cuDNN
    choose their algorithm by input size, which can move the last float bit (~3e-6)."""
    _, _, h, w = lr.shape
    if tile is None or (h <= tile and w <= tile):
        return model.predict(lr)
    s, r = model.scale, RECEPTIVE_RADIUS
    out = lr.new_empty(1, 1, h * s, w * s)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            top, left = max(y0 - r, 0), max(x0 - r, 0)
            part = model.predict(lr[:, :, top : min(y1 + r, h), left : min(x1 + r, w)])
            dy, dx = (y0 - top) * s, (x0 - left) * s
            out[:, :, y0 * s : y1 * s, x0 * s : x1 * s] = \
                part[:, :, dy : dy + (y1 - y0) * s, dx : dx + (x1 - x0) * s]
    return out


def windows(frames: Iterator[np.ndarray], length: int) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """(frame, the ``length`` frames centred on it, clamped at both ends) for every frame, reading
    ahead only ``length // 2`` frames."""
    half = length // 2
    past: deque[np.ndarray] = deque(maxlen=half + 1)  # the centre and the frames before it
    ahead: deque[np.ndarray] = deque()
    it = iter(frames)

    def window() -> list[np.ndarray]:
        before = [past[max(len(past) - 1 - k, 0)] for k in range(half, 0, -1)]
        after = [ahead[min(k, len(ahead) - 1)] if ahead else past[-1] for k in range(half)]
        return [*before, past[-1], *after]

    for frame in it:
        ahead.append(frame)
        if len(ahead) > half:
            past.append(ahead.popleft())
            yield past[-1], window()
    while ahead:
        past.append(ahead.popleft())
        yield past[-1], window()


def label_patch(text: str, frame_height: int) -> np.ndarray:
    """``text`` in white on a dark box, sized for a frame ``frame_height`` pixels high, as
    (h, w, 4) uint8 RGBA (the box 60% opaque, the letters opaque); drawn once per size."""
    from PIL import Image, ImageDraw, ImageFont

    size = max(10, frame_height // 24)
    font = ImageFont.load_default(size=size)
    left, top, right, bottom = map(int, font.getbbox(text))  # whole pixels (the stubs: float)
    pad = max(2, size // 4)
    img = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 153))
    ImageDraw.Draw(img).text((pad - left, pad - top), text, font=font, fill=(255, 255, 255, 255))
    return np.asarray(img)


def stamp(frame: np.ndarray, patch: np.ndarray, x: int, y: int) -> None:
    """Blend an RGBA ``patch`` into the RGB ``frame`` in place, its top-left corner at (x, y),
    cut to the frame."""
    h = min(patch.shape[0], frame.shape[0] - y)
    w = min(patch.shape[1], frame.shape[1] - x)
    if h <= 0 or w <= 0:
        return
    region = frame[y : y + h, x : x + w].astype(np.float32)
    alpha = patch[:h, :w, 3:4].astype(np.float32) / 255.0
    blended = region * (1.0 - alpha) + patch[:h, :w, :3].astype(np.float32) * alpha
    frame[y : y + h, x : x + w] = np.rint(blended).astype(np.uint8)


def compare_frame(bicubic: np.ndarray, network: np.ndarray,
                  labels: tuple[np.ndarray, ...] | None = None) -> np.ndarray:
    """The two halves side by side, each labelled in its top-left corner (`COMPARE_LABELS`)."""
    labels = labels or tuple(label_patch(t, bicubic.shape[0]) for t in COMPARE_LABELS)
    out = np.concatenate([bicubic, network], axis=1)
    margin = max(2, bicubic.shape[0] // 60)
    for k, patch in enumerate(labels):
        # Cut to its own half: a label never reaches into the other.
        stamp(out[:, k * bicubic.shape[1] : (k + 1) * bicubic.shape[1]], patch, margin, margin)
    return out


def command_line(weights: Path, config: Path | None, source: str | Path, out: str | Path, *,
                 compare: bool = False, fps: float | None = None) -> str:
    """The ``python -m trainable.upscale`` command for these files, quoted for a shell."""
    import shlex

    args = ["python", "-m", "trainable.upscale", "--weights", str(weights)]
    args += [] if config is None else ["--config", str(config)]
    args += [str(source), "--out", str(out)]
    args += ["--fps", f"{fps:g}"] if fps else []
    return shlex.join([*args, *(["--compare"] if compare else [])])


class Upscaler:
    """One frame at a time: RGB uint8 (h, w, 3) and its Y window -> RGB uint8 (H, W, 3)."""

    def __init__(self, model: EarlyFusionESPCN, device: torch.device, tile: int | None) -> None:
        self.model = model.to(device)
        self.device = device
        self.tile = tile
        self._labels: dict[int, tuple[np.ndarray, ...]] = {}  # by frame height

    def __call__(self, rgb: np.ndarray, window: list[np.ndarray], compare: bool) -> np.ndarray:
        s = self.model.scale
        lr = torch.from_numpy(np.stack([rgb_to_y(f) for f in window]))[None].to(self.device)
        lr = lr.float().div_(255.0)
        y = to_uint8(self._network(lr)[0, 0]).cpu().numpy()
        cbcr = torch.from_numpy(rgb_to_cbcr(rgb)).permute(2, 0, 1)[None].to(self.device)
        cbcr_t = upscale_bicubic(cbcr.div(255.0), s).clamp_(0, 1).mul_(255.0)
        cbcr_up = cbcr_t[0].permute(1, 2, 0).cpu().numpy()
        out = ycbcr_to_rgb(y, cbcr_up)
        if not compare:
            return out
        t = lr.shape[1]
        y_bic = to_uint8(upscale_bicubic(lr[:, t // 2 : t // 2 + 1], s)[0, 0]).cpu().numpy()
        height = out.shape[0]
        if height not in self._labels:
            self._labels[height] = tuple(label_patch(text, height) for text in COMPARE_LABELS)
        return compare_frame(ycbcr_to_rgb(y_bic, cbcr_up), out, self._labels[height])

    def _network(self, lr: torch.Tensor) -> torch.Tensor:
        while True:
            try:
                return upscale_y(self.model, lr, self.tile)
            except torch.cuda.OutOfMemoryError:
                # The frame does not fit: halve the tile (starting from the frame) until it does.
                side = self.tile or max(lr.shape[-2:])
                if side // 2 < _MIN_TILE:
                    raise
                self.tile = side // 2
                torch.cuda.empty_cache()


def upscale(args: argparse.Namespace) -> Path:
    out: Path = args.out
    kind = _output_kind(out)
    if out.exists() and not args.force:
        raise InputError(f"{out}: already exists; pass --force to replace it")
    if args.tile is not None and args.tile < _MIN_TILE:
        raise InputError(f"The value of `--tile` is {args.tile}, but must be >= {_MIN_TILE}.")
    model = load_model(args.weights, args.config)
    clip = open_input(args.input)
    device = resolve_device(args.device, "`--device`")
    upscaler = Upscaler(model, device, args.tile)
    frames = windows(clip.frames, model.frames)
    first = next(frames, None)
    if first is None:
        raise InputError(f"{clip.path}: holds no frames")
    lr0 = torch.from_numpy(np.stack([rgb_to_y(f) for f in first[1]]))[None].float().div_(255.0)
    if args.config is not None:  # without one: a source checkpoint, plain for certain
        check_residual(model, lr0, args.weights, args.config)
    stream = itertools.chain([first], frames)
    rate = Fraction(args.fps) if args.fps else clip.rate
    bar = Progress(clip.count, f"upscaling {clip.path.name}", unit="frame")
    try:
        outputs = (upscaler(rgb, win, args.compare) for rgb, win in stream)
        if kind == "video":
            _write_video(out, _counted(outputs, bar), rate)
        else:
            _write_frames(out, _counted(outputs, bar))
    finally:
        bar.close()
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trainable.upscale",
                                description=__doc__.split("\n\n")[0].split(": ", 1)[-1])
    p.add_argument("input", type=Path, metavar="INPUT", help="a video file or a folder of frames")
    p.add_argument("--weights", type=Path, required=True, metavar="W.pt",
                   help="weights-only state dict from python -m analysis.export, a trainer "
                        "checkpoint, or a source-repository checkpoint (g_best.pth.tar)")
    p.add_argument("--config", type=Path, metavar="W.yaml",
                   help="the config exported beside the weights (not needed for a "
                        "source-repository checkpoint)")
    p.add_argument("--out", type=Path, required=True, metavar="OUT",
                   help=f"a video ({', '.join(VIDEO_SUFFIXES)}) or, without a suffix, a folder "
                        "of PNG frames")
    p.add_argument("--compare", action="store_true",
                   help="bicubic (left) and the network (right) side by side")
    p.add_argument("--force", action="store_true", help="replace an existing OUT")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto: the GPU when there is one")
    p.add_argument("--tile", type=int, metavar="N",
                   help="run the network in tiles of N x N LR pixels (default: whole frames, "
                        "tiles only when a frame does not fit in GPU memory)")
    p.add_argument("--fps", type=float, help="output frame rate (default: the input's; 25 for "
                                             "a folder of frames)")
    return p


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        out = upscale(args)
    except InputError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        print(f"error: cannot write {e.filename or args.out}: {e.strerror or e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(f"wrote {out}")
    print(_next_step(args, out))
    return 0


def _next_step(args: argparse.Namespace, out: Path) -> str:
    """The other view of the same input: side by side with bicubic, or the network's alone."""
    if args.compare:
        stem = out.stem[: -len("-compare")] if out.stem.endswith("-compare") else f"{out.stem}-alone"
        return ("the network's output alone:  " + command_line(
            args.weights, args.config, args.input, out.with_name(stem + out.suffix), fps=args.fps))
    return ("side by side with bicubic:  " + command_line(
        args.weights, args.config, args.input, out.with_name(f"{out.stem}-compare{out.suffix}"),
        compare=True, fps=args.fps))


# --- private helpers -----------------------------------------------------------------------------
def _natural(name: str) -> list[object]:
    from trainable.sources import natural_key

    return natural_key(name)


def _read_images(files: list[Path]) -> Iterator[np.ndarray]:
    from trainable.sources import read_rgb

    size = None
    for f in files:
        rgb = read_rgb(f)  # DataError (an InputError) naming the file
        if size is not None and rgb.shape != size:
            raise InputError(f"{f}: is {rgb.shape[1]}x{rgb.shape[0]}, but the first frame is "
                             f"{size[1]}x{size[0]}")
        size = rgb.shape
        yield rgb


def _read_video(path: Path) -> Iterator[np.ndarray]:
    import av

    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for frame in container.decode(stream):
                yield frame.to_ndarray(format="rgb24")
    except av.FFmpegError as e:
        raise InputError(f"{path}: cannot decode ({e})") from None


def _output_kind(out: Path) -> str:
    if out.suffix.lower() in VIDEO_SUFFIXES:
        return "video"
    if not out.suffix:
        return "frames"
    raise InputError(f"{out}: unknown output kind {out.suffix!r}; use a video suffix "
                     f"({', '.join(VIDEO_SUFFIXES)}) or a folder name without one for PNG frames")


def _counted(frames: Iterator[np.ndarray], bar: Progress) -> Iterator[np.ndarray]:
    for f in frames:
        yield f
        bar.update(1)


def _write_video(out: Path, frames: Iterator[np.ndarray], rate: Fraction) -> None:
    """Encode into a temporary file beside ``out`` and rename it: a failed run leaves no half
    video under OUT's name."""
    import av

    # Literal: av's stubs then know the stream is a video stream.
    codec: Literal["libx264", "mpeg4"] = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    tmp = out.with_name(f".{out.stem}.partial{out.suffix}")
    out.parent.mkdir(parents=True, exist_ok=True)
    first = next(frames)  # the stream's size is fixed before its first frame
    try:
        with av.open(str(tmp), "w") as container:
            stream = container.add_stream(codec, rate=rate)
            stream.height, stream.width = first.shape[:2]
            stream.pix_fmt = "yuv420p"
            if codec == "libx264":
                stream.options = {"crf": "17", "preset": "medium"}
            else:
                stream.bit_rate = 20_000_000
            for rgb in itertools.chain([first], frames):
                frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                container.mux(stream.encode(frame))
            container.mux(stream.encode())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)


def _write_frames(out: Path, frames: Iterator[np.ndarray]) -> None:
    """PNG frames ``frame_000001.png`` ... into ``out``; with --force the old frames go first."""
    from PIL import Image

    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("frame_*.png"):
        old.unlink()
    for k, rgb in enumerate(frames, start=1):
        Image.fromarray(rgb).save(out / f"frame_{k:06d}.png")


if __name__ == "__main__":
    raise SystemExit(main())
