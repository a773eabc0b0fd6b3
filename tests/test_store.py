"""The decoded-frame cache: reuse without decoding, keys, concurrency, and the built-in clips."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from trainable import sources, store
from trainable.config import DataSpec, TrainConfig
from trainable.errors import BadFrames, DataError
from trainable.imaging import downscale, upscale_bicubic
from trainable.sources import rgb_to_y
from trainable.store import SplitData, cache_root, check_splits, keep, open_split, recall, sampled


def _vimeo(root: Path, names: list[str]) -> Path:
    rng = np.random.default_rng(0)
    for name in names:
        for i in range(1, 8):
            (root / "sequences" / name).mkdir(parents=True, exist_ok=True)
            rgb = rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)
            Image.fromarray(rgb).save(root / "sequences" / name / f"im{i}.png")
    (root / "sep_trainlist.txt").write_text("\n".join(names[:-1]) + "\n")
    (root / "sep_testlist.txt").write_text(names[-1] + "\n\n")
    return root


NAMES = ["00001/0001", "00002/0001", "00002/0002", "00003/0001"]


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def boom(*_a, **_k):
        raise AssertionError("the cache was rebuilt")

    for cls in (sources.VimeoSource, sources.ClipFolderSource, sources.BuiltinSource):
        monkeypatch.setattr(cls, "plan", boom)
        monkeypatch.setattr(cls, "read", boom)


def test_second_open_maps_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _vimeo(tmp_path / "v", NAMES)
    first = open_split(DataSpec(str(root), scale=4, cache_dir=tmp_path / "cache"), "train")
    _no_decoding(monkeypatch)
    again = open_split(DataSpec(str(root), scale=4, cache_dir=tmp_path / "cache"), "train")
    assert isinstance(again, SplitData) and again.source == first.source
    for a, b in zip(first.groups, again.groups, strict=True):
        assert isinstance(b.hr, np.memmap) and isinstance(b.lr, np.memmap)
        assert not b.hr.flags.writeable
        np.testing.assert_array_equal(a.hr, b.hr)
        assert (a.names, a.centres) == (b.names, b.centres)
    cached = [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]
    assert len(cached) == 1 and {p.name for p in cached[0].iterdir()} == {
        "g0_hr.npy", "g0_lr.npy", "meta.json"}


def test_key_follows_list_scale_and_split(tmp_path: Path) -> None:
    root = _vimeo(tmp_path / "v", NAMES)
    cache = tmp_path / "cache"

    def n_cached() -> int:
        return sum(p.is_dir() for p in cache.iterdir())

    assert open_split(DataSpec(str(root), scale=4, cache_dir=cache), "train").num_clips == 2
    open_split(DataSpec(str(root), scale=2, cache_dir=cache), "train")
    open_split(DataSpec(str(root), scale=4, cache_dir=cache), "val")
    assert n_cached() == 3
    (root / "sep_trainlist.txt").write_text("00001/0001\n00002/0001\n")  # an edited list
    assert open_split(DataSpec(str(root), scale=4, cache_dir=cache), "train").num_clips == 1
    assert n_cached() == 4


def test_a_cache_with_the_old_border_is_rebuilt(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    # Format 2 held LR frames whose border PyTorch had cut the kernel off at (issue 20): a cache
    # of that format, left on a machine, must not be mapped again.
    root = _vimeo(tmp_path / "v", NAMES)
    cache = tmp_path / "cache"
    monkeypatch.setattr(store, "FORMAT_VERSION", 2)
    old = open_split(DataSpec(str(root), scale=4, cache_dir=cache), "test")
    (old_folder,) = [p for p in cache.iterdir() if p.is_dir()]
    stale = np.lib.format.open_memmap(old_folder / "g0_lr.npy", mode="r+")
    stale[:] = 0  # stands for the old LR: anything the current downscale does not make
    stale.flush()
    del stale, old
    monkeypatch.undo()
    new = open_split(DataSpec(str(root), scale=4, cache_dir=cache), "test")
    assert sum(p.is_dir() for p in cache.iterdir()) == 2  # built afresh beside the old one
    (g,) = new.groups
    np.testing.assert_array_equal(g.lr, downscale(np.array(g.hr), 4))
    assert g.lr.any()


def test_the_description_is_logged_once_per_process(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    # A search opened train and val in the driver, each build logging the ~150-character
    # description twice, and the driver logged it again per split: 6 times (issue 20, item 13).
    monkeypatch.setattr(sources, "_logged", set())
    root = _vimeo(tmp_path / "v", NAMES)
    with caplog.at_level("INFO", logger="trainable"):
        for split in ("train", "val", "test", "train", "val"):  # three builds, then the cache
            data = open_split(DataSpec(str(root), scale=4, cache_dir=tmp_path / "cache"), split)
    said = [r.getMessage() for r in caplog.records if data.source in r.getMessage()]
    assert said == [f"data: {data.source}"]
    assert sum("Decoding the" in r.getMessage() for r in caplog.records) == 3  # builds still said
    # Another source (here the same tree at another scale) is described in its turn.
    with caplog.at_level("INFO", logger="trainable"):
        other = open_split(DataSpec(str(root), scale=2, cache_dir=tmp_path / "cache"), "test")
    assert [r.getMessage() for r in caplog.records].count(f"data: {other.source}") == 1


def test_concurrent_builders_decode_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _vimeo(tmp_path / "v", NAMES)
    calls = []
    plan = sources.VimeoSource.plan

    def counting_plan(self, split):
        calls.append(split)
        return plan(self, split)

    monkeypatch.setattr(sources.VimeoSource, "plan", counting_plan)
    results: list[SplitData] = []

    def worker() -> None:
        results.append(open_split(DataSpec(str(root), scale=4, cache_dir=tmp_path / "cache"), "train"))

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 4 and calls == ["train"]


def test_cache_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ESPCN_TUNE_CACHE", str(tmp_path / "env"))
    assert cache_root() == tmp_path / "env"
    assert cache_root(tmp_path / "x") == tmp_path / "x"
    monkeypatch.delenv("ESPCN_TUNE_CACHE")
    assert cache_root() == Path.home() / ".cache" / "espcn-tune"


# --- the built-in clips (decoded once for this module) -----------------------------------------
@pytest.fixture(scope="module")
def builtin_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("builtin-cache")
    open_split(DataSpec("builtin", scale=4, cache_dir=cache), "val")  # about 1.5 s: decodes once
    return cache


def test_builtin_val(builtin_cache: Path) -> None:
    d = open_split(DataSpec("builtin", scale=4, cache_dir=builtin_cache), "val")
    videos = [{n.split("/")[0] for n in g.names} for g in d.groups]
    assert videos == [{"bigbuckbunny"}, {"bikes"}, {"carphone_pristine"}]
    assert [g.hr.shape for g in d.groups] == [(3, 7, 720, 1280), (5, 7, 272, 640),
                                              (3, 7, 144, 176)]
    for g in d.groups:
        assert g.centres == (2, 3, 4) and g.hr.shape[2] % 4 == 0 and g.hr.shape[3] % 4 == 0
        assert g.lr.shape[2:] == (g.hr.shape[2] // 4, g.hr.shape[3] // 4)
    assert (d.num_clips, d.num_targets, d.max_frames) == (11, 33, 7)
    # The Y/LR pipeline is sane: bicubic x4 on carphone scores about 26.2 dB.
    g = d.groups[2]
    lr = torch.from_numpy(np.array(g.lr[:, 3], dtype=np.float32))[:, None]
    up = upscale_bicubic(lr, 4).round().clamp(0, 255)[:, 0].numpy()
    mse = ((up - g.hr[:, 3].astype(np.float32)) ** 2).mean()
    assert 25.5 < 10 * np.log10(255**2 / mse) < 27.0


def test_builtin_splits_share_no_clip(builtin_cache: Path,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    source = sources.BuiltinSource(4)  # plan() only probes the containers: no decoding
    names = {s: {c.name for c in source.plan(s)} for s in sources.SPLITS}
    assert [len(names[s]) for s in sources.SPLITS] == [42, 11, 11]
    assert not (names["train"] & names["val"] or names["train"] & names["test"]
                or names["val"] & names["test"])
    # A whole clip (7 frames) lies between train and val and between val and test in every video.
    for video in ("bigbuckbunny", "bikes", "carphone_pristine"):
        index = {s: sorted(int(n.split("/")[1]) for n in names[s] if n.startswith(video + "/"))
                 for s in sources.SPLITS}
        assert index["val"][0] - index["train"][-1] == 2
        assert index["test"][0] - index["val"][-1] == 2
    assert source.centres("train", 7) == tuple(range(7))
    _no_decoding(monkeypatch)  # the fixture cached the val split
    assert open_split(DataSpec("builtin", scale=4, cache_dir=builtin_cache), "val").num_clips == 11


@pytest.mark.parametrize("scale", [0, -4, 2.0, True, "4"])
def test_a_data_spec_refuses_a_scale_that_is_not_a_positive_integer(scale) -> None:
    with pytest.raises(DataError, match=f"scale must be a positive integer, got {scale!r}"):
        DataSpec("builtin", scale)


def test_a_config_names_its_data_in_one_value(tmp_path: Path) -> None:
    cfg = TrainConfig(data=str(tmp_path), data_lr=str(tmp_path / "lr"), scale=3,
                      cache_dir=str(tmp_path / "cache"))
    assert cfg.data_spec == DataSpec(str(tmp_path), 3, str(tmp_path / "lr"), str(tmp_path / "cache"))


# --- issue 25: Vimeo90K at full scale ------------------------------------------------------------
def _corrupt_pixels(path: Path) -> None:
    """Garbage in the middle of the compressed pixels: the header and the end (IEND) stay intact,
    so only decoding finds it."""
    data = bytearray(path.read_bytes())
    at = data.index(b"IDAT") + 20
    data[at : at + 40] = bytes(b ^ 0xFF for b in data[at : at + 40])
    path.write_bytes(bytes(data))


def test_a_build_goes_on_past_bad_frames_and_lists_every_one(tmp_path: Path) -> None:
    names = [f"00001/{i:04d}" for i in range(1, 9)]
    root = _vimeo(tmp_path / "v", names)
    bad = [root / "sequences/00001/0002/im3.png", root / "sequences/00001/0002/im6.png",
           root / "sequences/00001/0007/im1.png"]
    for p in bad:
        _corrupt_pixels(p)
    with pytest.raises(BadFrames) as e:
        open_split(DataSpec(str(root), scale=4, cache_dir=tmp_path / "cache"), "train")
    listed = [p for p in e.value.problems if "cannot read frame" in p]
    assert len(e.value.problems) == 3 and all(str(p) in " ".join(listed) for p in bad)
    assert all(str(p) in str(e.value) for p in bad)  # the message is the list
    assert not [p for p in (tmp_path / "cache").iterdir() if p.is_dir()]  # nothing half-built


def test_a_build_on_processes_writes_what_threads_write_and_lists_bad_frames_too(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    names = [f"0000{1 + i // 4}/{i % 4 + 1:04d}" for i in range(12)]
    root = _vimeo(tmp_path / "v", names)
    threads = open_split(DataSpec(str(root), scale=4, cache_dir=tmp_path / "t"), "train")
    monkeypatch.setattr(store, "PROCESS_MIN_CLIPS", 1)
    procs = open_split(DataSpec(str(root), scale=4, cache_dir=tmp_path / "p"), "train", workers=2)
    for a, b in zip(threads.groups, procs.groups, strict=True):
        assert a.names == b.names
        np.testing.assert_array_equal(a.hr, b.hr)
        np.testing.assert_array_equal(a.lr, b.lr)
    first = np.asarray(Image.open(root / "sequences" / procs.groups[0].names[0] / "im1.png"))
    np.testing.assert_array_equal(procs.groups[0].hr[0, 0], rgb_to_y(first))  # on disk, not lost
    _corrupt_pixels(root / "sequences/00003/0002/im4.png")
    with pytest.raises(BadFrames, match="00003/0002/im4.png"):
        open_split(DataSpec(str(root), scale=4, cache_dir=tmp_path / "p"), "train", workers=2)


def test_every_bad_frame_of_every_split_is_listed_before_any_decoding(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _vimeo(tmp_path / "v", NAMES)
    bad = {root / "sequences/00002/0001/im2.png": "missing frame",
           root / "sequences/00002/0002/im7.png": "truncated",
           root / "sequences/00003/0001/im4.png": "not a PNG file",  # the test split's clip
           root / "sequences/00001/0001/im5.png": "is 24x24, but frame"}
    for p, why in bad.items():
        if why == "missing frame":
            p.unlink()
        elif why == "truncated":
            p.write_bytes(p.read_bytes()[:80])
        elif why == "not a PNG file":
            p.write_bytes(b"<html>not found</html>" * 10)
        else:
            Image.fromarray(np.zeros((24, 24, 3), np.uint8)).save(p)

    def boom(*_a, **_k):
        raise AssertionError("decoded")

    monkeypatch.setattr(sources.VimeoSource, "decode", boom)
    with pytest.raises(BadFrames) as e:
        check_splits(DataSpec(str(root), scale=4, cache_dir=tmp_path / "cache"))
    assert len(e.value.problems) == len(bad)
    for p, why in bad.items():
        assert any(str(p) in line and why in line for line in e.value.problems), (p, why)


def test_a_replaced_frame_is_noticed_and_its_split_rebuilt(tmp_path: Path) -> None:
    root = _vimeo(tmp_path / "v", NAMES)
    spec = DataSpec(str(root), scale=4, cache_dir=tmp_path / "cache")
    old = open_split(spec, "test")
    frame = root / "sequences/00003/0001/im4.png"  # the test clip's centre
    rgb = np.full((24, 32, 3), 200, np.uint8)
    Image.fromarray(rgb).save(frame)  # same size, same name: only its bytes and mtime changed
    new = open_split(spec, "test")
    assert new.folder != old.folder
    np.testing.assert_array_equal(new.groups[0].hr[0, 3], rgb_to_y(rgb))
    assert not np.array_equal(old.groups[0].hr[0, 3], new.groups[0].hr[0, 3])


def _advice(path: Path) -> set[str]:
    """The VmFlags of this process's mappings of ``path`` (/proc/self/smaps)."""
    flags: set[str] = set()
    mine = False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            mine = line.endswith(str(path))
        elif mine and line.startswith("VmFlags:"):
            flags |= set(line.split()[1:])
    return flags


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux's /proc")
def test_the_train_maps_are_advised_random_and_the_others_not(tmp_path: Path) -> None:
    root = _vimeo(tmp_path / "v", NAMES)
    spec = DataSpec(str(root), scale=4, cache_dir=tmp_path / "cache")
    train, val = open_split(spec, "train"), open_split(spec, "val")
    assert train.folder and val.folder
    for name in ("g0_hr.npy", "g0_lr.npy"):
        assert "rr" in _advice(train.folder / name)  # MADV_RANDOM: no read-around on a fault
        flags = _advice(val.folder / name)
        assert flags and "rr" not in flags  # scored clip by clip: the read-ahead helps


def test_sampled_spreads_the_clips_evenly_without_copying(tmp_path: Path) -> None:
    import dataclasses

    from synthetic import make_split

    data = make_split("test", clips=10, t=3, hr_size=(16, 16))
    assert sampled(data, 0) is data and sampled(data, 10) is data
    four = sampled(data, 4)
    assert [n for g in four.groups for n in g.names] == ["clip0", "clip3", "clip6", "clip8"]
    assert all(g.hr.base is not None for g in four.groups)  # strided views of the split's array
    assert (four.num_clips, four.sampled_from, four.scope) == (4, 10, "sampled 4 of 10 clips")
    assert data.scope == "full"
    # Exactly the cap, over every group in proportion, each within one step of even.
    other = make_split("test", clips=2222, t=1, hr_size=(8, 8)).groups[0]
    two = dataclasses.replace(data, groups=(other, dataclasses.replace(other, names=tuple(
        f"b{i}" for i in range(2222)))))
    picked = sampled(two, 1000)
    assert picked.num_clips == 1000 and picked.sampled_from == 4444
    for prefix in ("clip", "b"):
        rows = [int(n.removeprefix(prefix)) for g in picked.groups for n in g.names
                if n.startswith(prefix) and n.removeprefix(prefix).isdigit()]
        steps = {b - a for a, b in zip(rows, rows[1:], strict=False)}
        assert len(rows) == 500 and steps == {4, 5}


def test_scores_computed_once_are_kept_with_the_cache(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from trainable import evaluate
    from trainable.evaluate import Convention, source_convention

    root = _vimeo(tmp_path / "v", NAMES)
    test = open_split(DataSpec(str(root), scale=4, cache_dir=tmp_path / "cache"), "test")
    calls: list[int] = []
    real = evaluate.score_conventions

    def counted(*a, **k):
        calls.append(len(k["conventions"]))
        return real(*a, **k)

    monkeypatch.setattr(evaluate, "score_conventions", counted)
    cpu = torch.device("cpu")
    first = evaluate.bicubic_scores(test, frames=3, crop_border=0, device=cpu)
    again = evaluate.bicubic_scores(test, frames=5, crop_border=0, device=cpu)
    assert calls == [1] and first == again  # bicubic upscales the centre: frames changes nothing
    assert test.folder and json.loads((test.folder / "bicubic-c0.json").read_text())["frames"] == 1
    # Ours kept, the source repository's convention not yet: only that one is computed.
    both = evaluate.bicubic_conventions(test, frames=3, device=cpu,
                                        conventions=(Convention(0), source_convention(4)))
    assert calls == [1, 1] and both[0] == first and both[1] != first
    assert (test.folder / "bicubic-c4-float.json").is_file()
    assert evaluate.bicubic_conventions(test, frames=3, device=cpu, conventions=(
        source_convention(4), Convention(0))) == both[::-1]
    assert calls == [1, 1]  # both kept now, in any order
    with pytest.raises(ValueError, match="not a name"):
        recall(test, "../escape")
    with pytest.raises(ValueError, match="not a name"):
        keep(test, "../escape", {})


class _DyingSource(sources.VimeoSource):
    """Kills the worker process that decodes clip 00002/0003 (never this test's own process)."""

    parent = 0

    def decode(self, clip):
        import os

        if clip.name == "00002/0003" and os.getpid() != self.parent:
            os._exit(3)
        return super().decode(clip)


def test_a_dead_decoding_process_leaves_its_clips_to_threads(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import os

    names = [f"0000{1 + i // 4}/{i % 4 + 1:04d}" for i in range(12)]
    root = _vimeo(tmp_path / "v", names)
    whole = open_split(DataSpec(str(root), scale=4, cache_dir=tmp_path / "c"), "train")  # threads
    source = _DyingSource(root.resolve(), 4, None)
    source.parent = os.getpid()
    monkeypatch.setattr(store, "PROCESS_MIN_CLIPS", 1)
    monkeypatch.setattr(store, "_CHUNK_CLIPS", 2)
    clips = source.plan("train")
    out = tmp_path / "out"
    out.mkdir()
    with caplog.at_level("WARNING", logger="trainable.store"):
        meta = store._write_arrays(source, "train", 4, clips, store._group_plan(clips), out, 2)
    assert any("ended abruptly" in r.getMessage() for r in caplog.records)
    assert "00002/0003" in meta["groups"][0]["names"]
    np.testing.assert_array_equal(np.load(out / "g0_hr.npy"), whole.groups[0].hr)  # every clip
