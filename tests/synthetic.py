"""Synthetic clips for the loop and sampler tests (no files, no decoding)."""

from __future__ import annotations

import numpy as np

from trainable.imaging import downscale


def make_split(split="train", *, clips=4, t=7, hr_size=(64, 64), scale=4, seed=0, centres=None):
    """A SplitData of smooth random clips (so bicubic is a meaningful baseline)."""
    from trainable.store import ClipGroup, SplitData

    rng = np.random.default_rng(seed)
    h, w = hr_size
    base = rng.random((clips, 1, h // 8 + 1, w // 8 + 1)) * 255
    # Upsample a coarse random field and shift it a little per frame: smooth, moving content.
    ys, xs = np.linspace(0, h // 8, h), np.linspace(0, w // 8, w)
    frames = []
    for k in range(t):
        yy, xx = ys[:, None] + 0.05 * k, xs[None, :] + 0.03 * k
        y0, x0 = np.floor(yy).astype(int).clip(0, h // 8 - 1), np.floor(xx).astype(int).clip(0, w // 8 - 1)
        fy, fx = yy - y0, xx - x0
        b = base[:, 0]
        v = (b[:, y0, x0] * (1 - fy) * (1 - fx) + b[:, y0 + 1, x0] * fy * (1 - fx)
             + b[:, y0, x0 + 1] * (1 - fy) * fx + b[:, y0 + 1, x0 + 1] * fy * fx)
        frames.append(v)
    hr = np.stack(frames, axis=1).round().clip(0, 255).astype(np.uint8)
    lr = downscale(hr, scale)
    group = ClipGroup(hr=hr, lr=lr, centres=tuple(centres if centres is not None else range(t)),
                      names=tuple(f"clip{i}" for i in range(clips)))
    return SplitData(split=split, scale=scale, groups=(group,), source="synthetic")


def write_clip_folders(root, *, clips=6, t=7, size=(96, 96), seed=0):
    """A folder of clip folders (Vid4/REDS shape) of smooth moving RGB frames, as PNG files."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    for c in range(clips):
        y = make_split(clips=1, t=t, hr_size=size, seed=seed + c).groups[0].hr[0]
        d = root / f"clip{c:02d}"
        d.mkdir(parents=True, exist_ok=True)
        for k in range(t):
            g = y[k]
            rgb = np.stack([g, np.roll(g, 3, axis=1), 255 - g], axis=-1).astype(np.uint8)
            Image.fromarray(rgb).save(d / f"{k:04d}.png")
    return root


def write_vimeo(root, train, test, *, size=(96, 96), seed=0):
    """A Vimeo90K septuplet tree in the official layout: ``sequences/<name>/im1..im7.png`` of
    smooth moving RGB frames, ``sep_trainlist.txt`` and ``sep_testlist.txt``."""
    from pathlib import Path

    from PIL import Image

    root = Path(root)
    for k, name in enumerate([*train, *test]):
        y = make_split(clips=1, t=7, hr_size=size, seed=seed + k).groups[0].hr[0]
        d = root / "sequences" / name
        d.mkdir(parents=True, exist_ok=True)
        for i in range(7):
            g = y[i]
            rgb = np.stack([g, np.roll(g, 3, axis=1), 255 - g], axis=-1).astype(np.uint8)
            Image.fromarray(rgb).save(d / f"im{i + 1}.png")
    (root / "sep_trainlist.txt").write_text("".join(n + "\n" for n in train))
    (root / "sep_testlist.txt").write_text("".join(n + "\n" for n in test))
    return root
