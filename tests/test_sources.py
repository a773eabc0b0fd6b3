"""Data sources: Vimeo90K septuplet/triplet trees, LR trees, clip folders, and bad inputs.

Everything goes through the public contract (:func:`trainable.store.open_split`) on tiny trees
written here, with the cache always under tmp_path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_imaging import assert_matches_matlab
from trainable import sources
from trainable.config import DataSpec
from trainable.errors import DataError
from trainable.imaging import downscale, rgb_to_y
from trainable.sources import split_counts, split_slice, vimeo_val_split
from trainable.store import open_split

W, H = 32, 24  # tiny HR frames: x4 gives 8x6


def _png(path: Path, w: int = W, h: int = H, seed: int = 0) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)
    return rgb


def _vimeo(root: Path, train: list[str], test: list[str], frames: int = 7,
           lr_root: Path | None = None, lr_size: tuple[int, int] = (W // 4, H // 4)) -> Path:
    prefix = "sep" if frames == 7 else "tri"
    for k, name in enumerate(train + test):
        for i in range(1, frames + 1):
            _png(root / "sequences" / name / f"im{i}.png", seed=100 * k + i)
            if lr_root is not None:
                _png(lr_root / name / f"im{i}.png", *lr_size, seed=100 * k + i + 50)
    (root / f"{prefix}_trainlist.txt").write_text("".join(n + "\n" for n in train))
    # The official tri_testlist ends in a blank line; CRLF must be tolerated too.
    (root / f"{prefix}_testlist.txt").write_bytes(("\r\n".join(test) + "\r\n\r\n").encode())
    return root


TRAIN = ["00001/0001", "00001/0002", "00002/0001", "00002/0007"]
TEST = ["00003/0001", "00003/0002"]


def _open(root: Path | str, split: str, tmp_path: Path, **kw):
    return open_split(DataSpec(str(root), scale=kw.pop("scale", 4), cache_dir=tmp_path / "cache",
                      **kw), split)


def test_vimeo_septuplet(tmp_path: Path) -> None:
    root = _vimeo(tmp_path / "vimeo", TRAIN, TEST)
    train, val, test = (_open(root, s, tmp_path) for s in ("train", "val", "test"))
    # Held-out validation: every 20th top-level sequence folder from the first (here 00001),
    # whole: none of its clips is trained on.
    assert val.groups[0].names == ("00001/0001", "00001/0002")
    assert train.groups[0].names == tuple(TRAIN[2:])
    assert test.groups[0].names == tuple(TEST)
    for d, n in ((train, 2), (val, 2), (test, 2)):
        (g,) = d.groups
        assert g.hr.shape == (n, 7, H, W) and g.lr.shape == (n, 7, H // 4, W // 4)
        assert g.hr.dtype == np.uint8 and g.lr.dtype == np.uint8
        assert g.centres == (3,)
        assert (d.num_clips, d.num_targets, d.max_frames) == (n, n, 7)
        np.testing.assert_array_equal(g.lr, downscale(np.array(g.hr), 4))
        assert_matches_matlab(g.lr, np.array(g.hr), 4)  # and that is MATLAB's imresize
        assert "Vimeo90K septuplet" in d.source
    im = np.asarray(Image.open(root / "sequences/00003/0002/im5.png").convert("RGB"))
    np.testing.assert_array_equal(test.groups[0].hr[1, 4], rgb_to_y(im))


def test_vimeo_triplet(tmp_path: Path) -> None:
    root = _vimeo(tmp_path / "vimeo", TRAIN, TEST, frames=3)
    d = _open(root, "test", tmp_path)
    assert d.groups[0].hr.shape == (2, 3, H, W)
    assert d.groups[0].centres == (1,)
    assert "triplet" in d.source


def test_vimeo_scale_3_mod_crops(tmp_path: Path) -> None:
    root = _vimeo(tmp_path / "vimeo", TRAIN, TEST)
    g = _open(root, "test", tmp_path, scale=3).groups[0]
    assert g.hr.shape[2:] == (24, 30) and g.lr.shape[2:] == (8, 10)


@pytest.mark.parametrize("mirror", [False, True])
def test_vimeo_lr_tree_is_used(tmp_path: Path, mirror: bool) -> None:
    lr = tmp_path / "lr"
    root = _vimeo(tmp_path / "vimeo", TRAIN, TEST, lr_root=lr / "sequences" if mirror else lr)
    g = _open(root, "test", tmp_path, data_lr=str(lr)).groups[0]
    im = np.asarray(Image.open(lr / ("sequences" if mirror else "") / "00003/0001/im4.png"))
    np.testing.assert_array_equal(g.lr[0, 3], rgb_to_y(im))
    assert not np.array_equal(g.lr, downscale(np.array(g.hr), 4))


def test_vimeo_lr_tree_of_wrong_size(tmp_path: Path) -> None:
    root = _vimeo(tmp_path / "vimeo", TRAIN, TEST, lr_root=tmp_path / "lr", lr_size=(16, 12))
    with pytest.raises(DataError, match=r"LR frame .*im1\.png is 16x12.*needs 8x6"):
        _open(root, "test", tmp_path, data_lr=str(tmp_path / "lr"))


def test_missing_frame_names_the_path(tmp_path: Path) -> None:
    root = _vimeo(tmp_path / "vimeo", TRAIN, TEST)
    frame = root / "sequences/00002/0007/im5.png"
    frame.unlink()
    with pytest.raises(DataError, match="missing frame .*00002/0007/im5.png"):
        _open(root, "train", tmp_path)


def test_corrupt_png_names_the_path(tmp_path: Path) -> None:
    root = _vimeo(tmp_path / "vimeo", TRAIN, TEST)
    (root / "sequences/00003/0002/im4.png").write_bytes(b"\x89PNG not really a png")
    with pytest.raises(DataError, match="cannot read frame .*00003/0002/im4.png"):
        _open(root, "test", tmp_path)
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]  # no half-built cache


def test_frames_of_different_sizes_in_one_clip(tmp_path: Path) -> None:
    root = _vimeo(tmp_path / "vimeo", TRAIN, TEST)
    _png(root / "sequences/00003/0001/im6.png", w=40)
    with pytest.raises(DataError, match="im6.png is 40x24.*im1.png .* is 32x24"):
        _open(root, "test", tmp_path)


def test_list_file_problems(tmp_path: Path) -> None:
    root = _vimeo(tmp_path / "vimeo", TRAIN, TEST)
    (root / "sep_trainlist.txt").write_text("\n \n\n")
    with pytest.raises(DataError, match="sep_trainlist.txt names no clips"):
        _open(root, "train", tmp_path)
    (root / "sep_trainlist.txt").write_text("00001/0001\n00009/0001\n")
    with pytest.raises(DataError, match="sep_trainlist.txt line 2 names 00009/0001"):
        _open(root, "train", tmp_path)
    (root / "sep_testlist.txt").unlink()
    with pytest.raises(DataError, match="missing list file .*sep_testlist.txt"):
        _open(root, "test", tmp_path)


def test_bad_roots(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        _open(tmp_path / "nowhere", "train", tmp_path)
    (tmp_path / "loose").mkdir()
    _png(tmp_path / "loose" / "0001.png")
    with pytest.raises(DataError, match="neither a Vimeo90K root .* nor a folder of clip folders"):
        _open(tmp_path / "loose", "train", tmp_path)
    (tmp_path / "noseq").mkdir()
    (tmp_path / "noseq" / "sep_trainlist.txt").write_text("00001/0001\n")
    with pytest.raises(DataError, match="no sequences/ folder"):
        _open(tmp_path / "noseq", "train", tmp_path)
    with pytest.raises(DataError, match="split 'dev'"):
        _open(tmp_path / "noseq", "dev", tmp_path)
    with pytest.raises(DataError, match="data_lr is only supported"):
        open_split(DataSpec("builtin", scale=4, data_lr=str(tmp_path), cache_dir=tmp_path / "c"), "val")


def _clips(root: Path, spec: dict[str, tuple[int, int, int]]) -> None:
    for k, (name, (t, h, w)) in enumerate(spec.items()):
        for i in range(t):  # unpadded numbers: frame10 must sort after frame9
            _png(root / name / f"frame{i}.png", w=w, h=h, seed=10 * k + i)


def test_clip_folders_split_by_clip(tmp_path: Path) -> None:
    root = tmp_path / "vid"
    _clips(root, {"a": (11, 24, 32), "b": (4, 24, 32), "c": (11, 24, 32), "d": (3, 16, 16),
                  "e": (2, 18, 21)})
    train, val, test = (_open(root, s, tmp_path) for s in ("train", "val", "test"))
    assert [g.names for g in train.groups] == [("a", "c"), ("b",)]  # grouped by (t, H, W)
    assert train.groups[0].centres == tuple(range(11)) and train.groups[1].centres == (0, 1, 2, 3)
    assert (train.num_clips, train.num_targets, train.max_frames) == (3, 26, 4)
    assert val.groups[0].names == ("d",) and test.groups[0].names == ("e",)
    assert test.groups[0].hr.shape == (1, 2, 16, 20)  # mod_crop to multiples of 4
    im = np.asarray(Image.open(root / "a/frame10.png"))
    np.testing.assert_array_equal(train.groups[0].hr[0, 10], rgb_to_y(im))
    np.testing.assert_array_equal(test.groups[0].lr, downscale(np.array(test.groups[0].hr), 4))
    assert_matches_matlab(test.groups[0].lr, np.array(test.groups[0].hr), 4)


def test_clip_folders_with_split_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "reds"
    _clips(root / "train", {"000": (3, 24, 32), "001": (3, 24, 32)})
    _clips(root / "val", {"000": (3, 24, 32)})
    d = _open(root, "train", tmp_path)
    assert d.groups[0].names == ("000", "001") and d.groups[0].hr.shape == (2, 3, 24, 32)
    assert _open(root, "val", tmp_path).num_clips == 1
    with pytest.raises(DataError, match="no test/"):
        _open(root, "test", tmp_path)


def test_clip_folder_problems(tmp_path: Path) -> None:
    _clips(tmp_path / "two", {"a": (2, 24, 32), "b": (2, 24, 32)})
    with pytest.raises(DataError, match="has 2 clips, but at least 3"):
        _open(tmp_path / "two", "train", tmp_path)
    _clips(tmp_path / "odd", {"a": (2, 24, 32), "b": (2, 24, 32), "c": (2, 24, 32)})
    (tmp_path / "odd" / "notes").mkdir()
    with pytest.raises(DataError, match="clip folder .*notes has no frames"):
        _open(tmp_path / "odd", "train", tmp_path)


def test_split_rules() -> None:
    assert split_counts(3, "x") == (1, 1, 1)
    assert split_counts(18, "x") == (12, 3, 3)
    # A gap leaves whole clips out between neighbouring splits, out of train's share.
    assert split_counts(18, "x", gap=1) == (10, 3, 3)
    assert [split_slice(18, s, "x", gap=1) for s in ("train", "val", "test")] == [
        slice(0, 10), slice(11, 14), slice(15, 18)]
    with pytest.raises(DataError, match="at least 5 are needed"):
        split_counts(4, "x", gap=1)
    # Vimeo: 96 top-level folders of ~673 clips, as in sep_trainlist.txt.
    names = [f"{f:05d}/{c:04d}" for f in range(1, 97) for c in range(1, 674)]
    scored, held = vimeo_val_split(names, "sep_trainlist.txt")
    held_folders = {names[i][:5] for i in held}
    assert held_folders == {"00001", "00021", "00041", "00061", "00081"}
    assert len(held) == 5 * 673  # every clip of a held-out folder is out of training
    assert len(scored) == 200 and set(scored) <= held
    assert {names[i][:5] for i in scored} == held_folders  # spread over every held-out folder


def test_vimeo_subset_in_one_folder_holds_out_whole_clips(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> None:
    # A user trying the tool on part of the data set: every clip in one sequence folder. Holding
    # out by folder is impossible, so validation is the first 1/20 of the clips, as one block.
    monkeypatch.setattr(sources, "_logged", set())  # what this process has logged once already
    names = [f"00042/{c:04d}" for c in range(1, 42)]
    with caplog.at_level("INFO", logger="trainable.sources"):
        scored, held = vimeo_val_split(names, "one-folder.txt")
        assert vimeo_val_split(names, "one-folder.txt") == (scored, held)  # deterministic
    assert held == {0, 1, 2} and scored == [0, 1, 2]  # ceil(41 / 20) = 3 clips
    lines = [r.getMessage() for r in caplog.records if "one-folder.txt" in r.getMessage()]
    assert lines == ["one-folder.txt: every clip is in the sequence folder '00042', so validation "
                     "holds out whole clips instead of folders: the first 3 of 41 in list order "
                     "(00042/0001 to 00042/0003), none of them trained on"]  # once, not twice
    assert vimeo_val_split(["00001/0007", "00001/0002"], "two.txt") == ([0], {0})  # list order
    # A clip listed twice is one clip: held out whole, every line of it.
    assert vimeo_val_split(["00001/0001", "00001/0002", "00001/0001"], "dup.txt")[1] == {0, 2}
    with pytest.raises(DataError, match="dup2.txt: every line names the clip '00001/0001'"):
        vimeo_val_split(["00001/0001", "00001/0001"], "dup2.txt")
    # Through the data path: a tiny tree whose train list lies in one folder.
    train = ["00009/0001", "00009/0002", "00009/0003"]
    root = _vimeo(tmp_path / "vimeo", train, TEST)
    with caplog.at_level("INFO", logger="trainable.sources"):
        tr, val = (_open(root, s, tmp_path) for s in ("train", "val"))
    assert val.groups[0].names == ("00009/0001",)
    assert tr.groups[0].names == ("00009/0002", "00009/0003")
    said = [r.getMessage() for r in caplog.records if str(root) in r.getMessage()]
    assert len(said) == 1  # the train and val builds both split the list: one line
    assert said[0].startswith(f"{root / 'sep_trainlist.txt'}: every clip is in the sequence "
                              "folder '00009', so validation holds out whole clips")
