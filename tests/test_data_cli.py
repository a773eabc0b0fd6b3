"""python -m trainable.data build|check: a tree's caches built ahead, every frame checked; and the
progress output it shows (a bar on a terminal only)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from trainable import progress
from trainable.data import main


def _tree(root: Path) -> Path:
    names = ["00001/0001", "00002/0001", "00002/0002", "00003/0001"]
    rng = np.random.default_rng(0)
    for name in names:
        (root / "sequences" / name).mkdir(parents=True, exist_ok=True)
        for i in range(1, 8):
            rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(root / "sequences" / name / f"im{i}.png")
    (root / "sep_trainlist.txt").write_text("\n".join(names[:3]) + "\n")
    (root / "sep_testlist.txt").write_text(names[3] + "\n")
    return root


def test_build_makes_every_split_and_check_lists_every_bad_frame(tmp_path, capsys):
    root = _tree(tmp_path / "v")
    cache = ["--set", f"cache_dir={tmp_path / 'cache'}"]
    assert main(["build", "--data", str(root), *cache, "-q"]) == 0
    out = capsys.readouterr().out
    assert all(f"{s}: " in out for s in ("train", "val", "test"))
    assert len([p for p in (tmp_path / "cache").iterdir() if p.is_dir()]) == 3
    assert main(["check", "--data", str(root), *cache, "-q"]) == 0
    assert "no bad frame" in capsys.readouterr().out
    bad = [root / "sequences/00002/0002/im2.png", root / "sequences/00003/0001/im7.png"]
    for p in bad:  # the header and the IEND intact: only decoding finds these
        data = bytearray(p.read_bytes())
        at = data.index(b"IDAT") + 20
        data[at : at + 40] = bytes(b ^ 0xFF for b in data[at : at + 40])
        p.write_bytes(bytes(data))
    assert main(["check", "--data", str(root), *cache, "-q"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "2 bad frames" in err and "Traceback" not in err
    assert all(str(p) in err for p in bad)
    # The train split meets its bad frame, the build goes on to test and meets the other: one list.
    assert main(["build", "--data", str(root), "--splits", "train,test", *cache, "-q"]) == 2
    err = capsys.readouterr().err
    assert "2 bad frames" in err and all(str(p) in err for p in bad)
    assert main(["build", "--splits", "dev", "-q"]) == 2


def test_progress_is_a_log_line_now_and_then_off_a_terminal(caplog, capsys,
                                                            monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    with caplog.at_level(logging.INFO, logger="trainable.progress"):
        with progress.Progress(4, "decoding train", terminal=False) as bar:
            bar.update(2)
            bar.update(2)
    assert [r.getMessage().split(",")[0] for r in caplog.records] == [
        "decoding train: 2 / 4 clips (50%)", "decoding train: 4 / 4 clips (100%)"]
    assert capsys.readouterr().err == ""  # no bar, no carriage returns in a log
    monkeypatch.setattr(progress, "LOG_EVERY_S", 30.0)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="trainable.progress"):
        with progress.Progress(4, "decoding val", terminal=False) as bar:
            bar.update(4)
    assert not caplog.records  # a step shorter than 30 s says nothing
