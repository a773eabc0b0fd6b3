"""The device gather (one buffer, indices drawn by a seeded torch.Generator) run on the CPU: the
same patch contract as the numpy path, clip-shape groups mixed in one batch, exact resume."""

import numpy as np
import pytest
import torch

from trainable import sampler as sampler_module
from trainable.errors import DataError
from trainable.sampler import PatchSampler, draw_numbers
from trainable.store import ClipGroup, SplitData

CPU = torch.device("cpu")


def _coded_group(n, t, size, scale, base, width=None):
    """LR pixel (y, x) of frame k of clip i holds a code naming the group, clip, frame and place;
    ``size`` rows of ``width`` (or ``size``) pixels."""
    width = width or size
    lr = np.empty((n, t, size, width), dtype=np.uint8)
    for i in range(n):
        for k in range(t):
            lr[i, k] = (base + 17 * i + 5 * k + np.arange(size)[:, None] * 3
                        + np.arange(width)[None, :] * 7) % 256
    return ClipGroup(hr=lr.repeat(scale, 2).repeat(scale, 3), lr=lr, centres=tuple(range(t)),
                     names=tuple(f"g{base}c{i}" for i in range(n)))


def _two_shape_split(scale=2):
    # The second group's clips are not square: each path must tell a frame's height from its width.
    groups = (_coded_group(2, 5, 12, scale, 0), _coded_group(3, 4, 20, scale, 100, width=16))
    return SplitData(split="train", scale=scale, groups=groups, source="codes")


def _torch_sampler(data, seed=0, frames=3, patch=6):
    return PatchSampler(data, frames=frames, patch_size=patch, seed=seed, device=CPU, gather="torch")


def _reference_patches(data, frames, patch):
    """Every LR window of ``frames`` (clamped) x patch x patch under the 8 flips, per group: the
    set a correct sampler must draw from."""
    found = set()
    for g in data.groups:
        n, t, h, w = g.lr.shape
        for i in range(n):
            for c in g.centres:
                idx = np.clip(np.arange(frames) - frames // 2 + c, 0, t - 1)
                for y in range(h - patch + 1):
                    for x in range(w - patch + 1):
                        win = g.lr[i, idx, y:y + patch, x:x + patch]
                        for tr in (False, True):
                            v = win.transpose(0, 2, 1) if tr else win
                            for fv in (False, True):
                                for fh in (False, True):
                                    u = v[:, ::-1] if fv else v
                                    u = u[:, :, ::-1] if fh else u
                                    found.add(u.tobytes())
    return found


def test_device_gather_draws_real_windows_from_every_group_with_aligned_targets():
    data = _two_shape_split()
    lr, hr = _torch_sampler(data).sample(48)
    assert lr.shape == (48, 3, 6, 6) and hr.shape == (48, 1, 12, 12)
    assert lr.dtype == hr.dtype == torch.float32
    valid = _reference_patches(data, 3, 6)
    codes = (lr * 255).round().to(torch.uint8).numpy()
    assert all(c.tobytes() in valid for c in codes)
    # The HR target is the centre frame's window, pixel-aligned at the HR scale.
    assert torch.equal(hr[:, 0, ::2, ::2], lr[:, 1])
    # Both groups (12x12 and 16x20 clips) appear in one batch.
    from_small = _reference_patches(SplitData("train", 2, data.groups[:1], "g0"), 3, 6)
    small = [c for c in codes if c.tobytes() in from_small]
    assert 0 < len(small) < len(codes)


def test_device_gather_clamps_the_time_window_at_clip_edges():
    t = 5
    lr = np.broadcast_to(np.arange(t, dtype=np.uint8)[None, :, None, None], (1, t, 8, 8)).copy()
    g = ClipGroup(hr=lr.repeat(2, 2).repeat(2, 3), lr=lr, centres=(0,), names=("a",))
    sampler = _torch_sampler(SplitData("train", 2, (g,), "t"), frames=5, patch=4)
    lr_batch, hr_batch = sampler.sample(4)
    assert (lr_batch[:, :, 0, 0] * 255).round().tolist() == [[0, 0, 0, 1, 2]] * 4
    assert (hr_batch * 255).round().unique().tolist() == [0.0]


def test_device_gather_resumes_exactly_from_its_state():
    data = _two_shape_split()
    straight = _torch_sampler(data, seed=3)
    first = _torch_sampler(data, seed=3)
    for _ in range(3):
        straight.sample(8), first.sample(8)
    state = first.state_dict()
    assert state == {"kind": "torch-chunks", "seed": 3, "drawn": 3}
    resumed = _torch_sampler(data, seed=99)  # the state wins over the seed
    resumed.load_state_dict(state)
    for _ in range(2):
        (a_lr, a_hr), (b_lr, b_hr) = straight.sample(8), resumed.sample(8)
        assert torch.equal(a_lr, b_lr) and torch.equal(a_hr, b_hr)
    # batches() gives what as many sample() calls give.
    ahead = list(_torch_sampler(data, seed=3).batches(4, 8))
    single = _torch_sampler(data, seed=3)
    for lr, hr in ahead:
        s_lr, s_hr = single.sample(8)
        assert torch.equal(lr, s_lr) and torch.equal(hr, s_hr)


@pytest.mark.parametrize("gather", ["auto", "torch"])
def test_a_checkpoint_of_the_numpy_generator_reseeds_deterministically(gather):
    # Before one patch stream, the host path kept a numpy generator's state in its checkpoint.
    data = _two_shape_split()
    old = {"kind": "numpy", "rng": np.random.Generator(np.random.PCG64(5)).bit_generator.state}

    def make(seed):
        return PatchSampler(data, frames=3, patch_size=6, seed=seed, device=CPU, gather=gather)

    a, b, fresh = make(7), make(8), make(7)
    a.load_state_dict(old)
    b.load_state_dict(old)
    lr_a, lr_b = a.sample(16)[0], b.sample(16)[0]
    assert torch.equal(lr_a, lr_b)  # same checkpoint, same continuation
    assert not torch.equal(lr_a, fresh.sample(16)[0])  # and not a restart from the seed
    other = make(7)  # another checkpoint, another continuation
    other.load_state_dict({**old, "rng": np.random.Generator(np.random.PCG64(6)).bit_generator.state})
    assert not torch.equal(lr_a, other.sample(16)[0])


def test_three_clip_shapes_draw_real_windows_alike_on_both_paths():
    # Past two groups, a sample's place in its group and each group's place in the device buffer
    # are counted from every group before it.
    data = SplitData("train", 2, (_coded_group(2, 5, 12, 2, 0), _coded_group(3, 4, 20, 2, 100, 16),
                                  _coded_group(2, 3, 10, 2, 200, 14)), "codes")
    host = PatchSampler(data, frames=3, patch_size=6, seed=2, device=CPU)
    device = _torch_sampler(data, seed=2)
    assert device.device_gather().sample(4)[0].dtype == torch.uint8  # a quarter of float32
    valid = _reference_patches(data, 3, 6)
    for _ in range(3):
        (h_lr, h_hr), (d_lr, d_hr) = host.sample(16), device.sample(16)
        assert torch.equal(h_lr, d_lr) and torch.equal(h_hr, d_hr)
        assert all(c.tobytes() in valid for c in (h_lr * 255).round().to(torch.uint8).numpy())


def test_batches_drawn_elsewhere_move_the_position():
    # trainable.graphed draws through its own copy of the device path and counts them here.
    data = _two_shape_split()
    a, b = _torch_sampler(data, seed=3), _torch_sampler(data, seed=3)
    a.sample(4), a.sample(4), a.sample(4)
    b.sample(4)
    b.advance(2)
    assert b.device_position() == a.device_position() == (3, 3)
    assert torch.equal(a.sample(4)[0], b.sample(4)[0])
    with pytest.raises(DataError, match="sampled on the CPU"):
        PatchSampler(data, frames=3, patch_size=6, seed=3, device=CPU).device_gather()


def test_a_draw_covers_every_target_and_all_eight_orientations():
    target, flips, crop_u = draw_numbers(torch.Generator().manual_seed(0), 7, 4096)
    assert sorted(target.unique().tolist()) == list(range(7))
    assert flips.shape == (3, 4096) and sorted(flips.unique().tolist()) == [0, 1]
    assert len((flips[0] * 4 + flips[1] * 2 + flips[2]).unique()) == 8
    # float64: a float32 draw times a frame size can round up to the size itself.
    assert crop_u.dtype == torch.float64 and 0 <= crop_u.min() and crop_u.max() < 1


@pytest.mark.parametrize("rows, cols", [(6, 12), (12, 6)])
def test_a_clip_narrower_than_the_patch_either_way_is_refused_by_name(rows, cols):
    data = SplitData("train", 2, (_coded_group(2, 3, rows, 2, 0, width=cols),), "codes")
    with pytest.raises(DataError, match=rf"^codes: clip 'g0c0' is {cols}x{rows} LR pixels, "
                                        r"smaller than patch_size 7$"):
        PatchSampler(data, frames=3, patch_size=7, seed=0, device=CPU)
    PatchSampler(data, frames=3, patch_size=6, seed=0, device=CPU)  # exactly the patch: fine


def test_a_split_without_target_frames_is_refused():
    g = _coded_group(1, 3, 8, 2, 0)
    data = SplitData("train", 2, (ClipGroup(hr=g.hr, lr=g.lr, centres=(), names=g.names),), "codes")
    with pytest.raises(DataError, match="^codes: the train split has no training frames$"):
        PatchSampler(data, frames=3, patch_size=6, seed=0, device=CPU)


def test_the_chunk_seeds_stay_what_they_were():
    # A checkpoint holds (seed, batches drawn): a run resumed by a later espcn-tune draws the
    # patches the interrupted one would have only while each chunk's seed stays the same.
    assert sampler_module._chunk_seed(3, 0) == 8908447917015295944
    assert sampler_module._chunk_seed(3, 1) == 7758986611523537374


def test_a_draw_into_given_tensors_fills_them():
    # The CUDA graph draws into static tensors that its captured gather reads (trainable.graphed).
    gather = _torch_sampler(_two_shape_split()).device_gather()
    out = (torch.empty(8, dtype=torch.int64), torch.empty((3, 8), dtype=torch.int64),
           torch.empty((2, 8), dtype=torch.float64))
    gather.generator.manual_seed(1)
    got = gather.draw(8, out)
    gather.generator.manual_seed(1)
    fresh = gather.draw(8)
    for g, o, f in zip(got, out, fresh, strict=True):
        assert g.data_ptr() == o.data_ptr() and torch.equal(o, f)


def test_reseeding_an_old_checkpoint_says_so(caplog):
    # As the trainer kept the numpy generator before checkpoints had a kind.
    old = {"rng": np.random.Generator(np.random.PCG64(5)).bit_generator.state}
    sampler = _torch_sampler(_two_shape_split())
    with caplog.at_level("WARNING", logger="trainable.sampler"):
        sampler.load_state_dict(old)
    seed = sampler.device_position()[0]
    assert caplog.messages == [
        f"resuming a numpy-sampler checkpoint on the torch-chunks sampler: reseeded ({seed}); the "
        "patches differ from an uninterrupted run's"]


@pytest.mark.parametrize("border", [0, 2])
def test_the_host_path_and_the_device_gather_draw_the_same_patches(monkeypatch, border):
    # One patch stream: the same seed draws the same patches whichever path gathers them, in
    # the same order in a batch that mixes clip shapes, across chunk boundaries (chunks of 5
    # batches of 4 here), prefetched or not, and after a resume from either path's checkpoint.
    from trainable import sampler

    monkeypatch.setattr(sampler, "_CHUNK_HR_PIXELS", 5 * 4 * 12 * 12)
    data = _two_shape_split()

    def make(gather, seed=3):
        return PatchSampler(data, frames=3, patch_size=6, seed=seed, device=CPU, gather=gather,
                            loss_border=border)

    host, device = make("auto"), make("torch")
    assert host._device_gather is None and device._device_gather is not None
    from_host = [host.sample(4) for _ in range(7)] + list(host.batches(6, 4))
    from_device = [device.sample(4) for _ in range(7)] + list(device.batches(6, 4))
    assert len(from_host[0]) == (3 if border else 2)
    for a, b in zip(from_host, from_device, strict=True):
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    resumed_host, resumed_device = make("auto", seed=0), make("torch", seed=0)
    resumed_host.load_state_dict(device.state_dict())
    resumed_device.load_state_dict(host.state_dict())
    assert host.state_dict() == device.state_dict()
    for a, b, c in zip(host.batches(3, 4), resumed_host.batches(3, 4), resumed_device.batches(3, 4),
                       strict=True):
        assert all(torch.equal(x, y) and torch.equal(x, z) for x, y, z in zip(a, b, c, strict=True))


def test_a_packed_trial_uploads_only_what_fits_its_share_of_the_card(monkeypatch):
    from trainable import sampler

    data = _two_shape_split()
    nbytes = sum(g.hr.nbytes + g.lr.nbytes for g in data.groups)
    card = torch.device("cuda", 1)  # the trial's card, asked by name (card 0 is full)
    # A card with 20x the split free: uploaded when the trial has the whole card...
    monkeypatch.setattr(torch.cuda, "mem_get_info",
                        lambda d: (20 * nbytes, 20 * nbytes) if d == card else (0, 20 * nbytes))
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction",
                        lambda d: 1.0 if d == card else 0.0, raising=False)
    assert sampler._storage_device(data, card) == card
    # ...kept on the CPU when it is capped at 1/8 of it (the split would be 40% of its share).
    monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda _d: 0.125, raising=False)
    assert sampler._storage_device(data, card) == CPU
    # A torch without the getter (< 2.6): the whole card.
    monkeypatch.delattr(torch.cuda, "get_per_process_memory_fraction")
    assert sampler._storage_device(data, card) == card


def test_a_batch_depends_only_on_the_seed_and_the_batches_before_it(monkeypatch):
    # Chunks of 5 batches of 4: a resume (and a benchmark's split into intervals) lands inside
    # a chunk, and must draw what one uninterrupted stream draws.
    from trainable import sampler

    monkeypatch.setattr(sampler, "_CHUNK_HR_PIXELS", 5 * 4 * 12 * 12)
    data = _two_shape_split()
    assert _torch_sampler(data).chunk_batches(4) == 5
    straight = [lr for lr, _ in _torch_sampler(data, seed=3).batches(12, 4)]
    split = _torch_sampler(data, seed=3)
    pieces = [lr for n in (2, 5, 1) for lr, _ in split.batches(n, 4)]
    resumed = _torch_sampler(data, seed=0)
    resumed.load_state_dict(split.state_dict())  # 8 drawn: 3 into the second chunk
    pieces += [lr for lr, _ in resumed.batches(4, 4)]
    assert all(torch.equal(a, b) for a, b in zip(straight, pieces, strict=True))
    # Chunks differ from each other and from another seed's.
    assert not torch.equal(straight[0], straight[5])
    assert not torch.equal(straight[0], next(_torch_sampler(data, seed=4).batches(1, 4))[0])


def test_a_checkpoint_from_before_the_chunks_reseeds_deterministically(caplog):
    data = _two_shape_split()
    old = {"kind": "torch", "rng": torch.Generator().manual_seed(5).get_state()}
    a, b = _torch_sampler(data, seed=1), _torch_sampler(data, seed=2)
    with caplog.at_level("WARNING", logger="trainable.sampler"):
        a.load_state_dict(old)
    assert caplog.messages[0].startswith("resuming a torch-sampler checkpoint on the torch-chunks")
    b.load_state_dict(old)
    assert a.state_dict() == b.state_dict() and a.state_dict()["drawn"] == 0
    assert torch.equal(a.sample(8)[0], b.sample(8)[0])


def test_drawing_a_chunk_at_a_time_cuts_the_operator_calls_per_batch(monkeypatch):
    # Each call is a kernel launch on a GPU, where launches bound the step.
    from torch.utils._python_dispatch import TorchDispatchMode

    from trainable import sampler

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    def calls_per_batch(chunk_pixels):
        monkeypatch.setattr(sampler, "_CHUNK_HR_PIXELS", chunk_pixels)
        s = _torch_sampler(_two_shape_split())
        Count.calls = 0
        with Count():
            for _ in range(8):
                s.sample(4)
        return Count.calls / 8

    one_per_draw = calls_per_batch(4 * 12 * 12)  # a chunk is one batch: the old behaviour
    eight_per_draw = calls_per_batch(8 * 4 * 12 * 12)
    assert eight_per_draw < one_per_draw / 4
