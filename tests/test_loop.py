import math
import threading
import time

import numpy as np
import pytest
import torch

from trainable.config import TrainConfig
from trainable.errors import DataError
from trainable.loop import Trainer, train_step
from trainable.model import EarlyFusionESPCN
from trainable.sampler import PatchSampler

TINY = dict(epochs=4, epoch_samples=64, batch_size=8, validation_interval=1, use_amp=False,
            patch_size=8, num_threads=1)


def _trainer(tiny_train, tiny_val, **over):
    return Trainer(TrainConfig(**{**TINY, **over}), tiny_train, tiny_val)


def _code_split(size=16, scale=2, t=5):
    """LR pixel (y, x) holds y*16 + x in every frame; HR holds it nearest-upsampled."""
    from trainable.store import ClipGroup, SplitData

    code = (np.arange(size)[:, None] * 16 + np.arange(size)[None, :]).astype(np.uint8)
    lr = np.broadcast_to(code, (2, t, size, size)).copy()
    lr[1] = 255 - lr[1]
    hr = lr.repeat(scale, axis=2).repeat(scale, axis=3)
    g = ClipGroup(hr=hr, lr=lr, centres=tuple(range(t)), names=("a", "b"))
    return SplitData(split="train", scale=scale, groups=(g,), source="codes")


def test_one_crop_and_flip_shared_by_all_frames_and_the_target():
    data = _code_split()
    sampler = PatchSampler(data, frames=3, patch_size=6, seed=0, device=torch.device("cpu"))
    lr, hr = sampler.sample(64)
    assert lr.shape == (64, 3, 6, 6) and hr.shape == (64, 1, 12, 12)
    # Every frame of a sample shows the same window under the same flip/rotation...
    assert torch.equal(lr[:, 0], lr[:, 1]) and torch.equal(lr[:, 1], lr[:, 2])
    # ...and the HR target is exactly that window, pixel-aligned.
    assert torch.equal(hr[:, 0, ::2, ::2], lr[:, 1])
    # The windows really vary (crops and all 8 flips/rotations are drawn).
    assert len({tuple(x.flatten()[:4].tolist()) for x in lr[:, 0]}) > 20


def test_time_window_is_centred_and_clamped_at_clip_edges():
    from trainable.store import ClipGroup, SplitData

    t = 5
    lr = np.broadcast_to(np.arange(t, dtype=np.uint8)[None, :, None, None], (1, t, 8, 8)).copy()
    g = ClipGroup(hr=lr.repeat(2, 2).repeat(2, 3), lr=lr, centres=(0,), names=("a",))
    sampler = PatchSampler(SplitData(split="train", scale=2, groups=(g,), source="t"), frames=5,
                           patch_size=4, seed=0, device=torch.device("cpu"))
    lr_batch, hr_batch = sampler.sample(4)
    assert (lr_batch[:, :, 0, 0] * 255).round().tolist() == [[0, 0, 0, 1, 2]] * 4
    assert (hr_batch * 255).round().unique().tolist() == [0.0]


def test_accumulation_equals_one_big_batch_in_fp32():
    torch.manual_seed(0)
    lr, hr = torch.rand(16, 3, 8, 8), torch.rand(16, 1, 32, 32)
    results = []
    for micro in ([(lr, hr)], [(lr[:8], hr[:8]), (lr[8:], hr[8:])]):
        torch.manual_seed(1)
        model = EarlyFusionESPCN()
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        for _ in range(2):
            loss = train_step(model, opt, scaler, micro, autocast=lambda: torch.autocast(
                "cpu", enabled=False), grad_clip=0.0)
        results.append((loss.item(), [p.detach().clone() for p in model.parameters()]))
    (loss_a, params_a), (loss_b, params_b) = results
    assert loss_a == pytest.approx(loss_b, rel=1e-5)
    for a, b in zip(params_a, params_b, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)


def test_training_improves_and_reports_every_interval(tiny_train, tiny_val, monkeypatch):
    import trainable.evaluate

    calls = []
    real = trainable.evaluate.bicubic_predictor

    def counted(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainable.evaluate, "bicubic_predictor", counted)
    tr = _trainer(tiny_train, tiny_val, residual=True, optimizer="adam", model_lr=1e-3)
    seen = []
    last = tr.run(lambda r, _: seen.append(r))
    assert [r.epoch for r in seen] == [1, 2, 3, 4]
    assert [r.samples for r in seen] == [64, 128, 192, 256]
    assert last.status == "completed"
    assert all(math.isfinite(r.psnr) and 0 < r.ssim <= 1 for r in seen)
    # Computed once: equal values alone would pass if it were recomputed (it is deterministic).
    assert len(calls) == 1
    assert seen[0].bicubic_psnr == seen[-1].bicubic_psnr
    assert seen[-1].loss < seen[0].loss


@pytest.mark.parametrize("gather", ["numpy", "torch"])
def test_resume_gives_the_same_result_as_an_uninterrupted_run(tiny_train, tiny_val, tmp_path,
                                                              monkeypatch, gather):
    from trainable import sampler

    # "torch": the GPU's gather, here on the CPU; "numpy": the host path. Chunks of 3 batches,
    # so that the resume (after 16 batches) lands inside a chunk.
    monkeypatch.setattr(sampler, "_GATHER", "torch" if gather == "torch" else "auto")
    monkeypatch.setattr(sampler, "_CHUNK_HR_PIXELS", 3 * 8 * (8 * tiny_train.scale) ** 2)
    straight = _trainer(tiny_train, tiny_val)
    assert straight.sampler.gathers_on_device is False
    assert (straight.sampler._device_gather is None) == (gather == "numpy")
    assert straight.sampler.chunk_batches(8) == 3
    straight.run()
    first = _trainer(tiny_train, tiny_val)
    first.run_interval()
    first.run_interval()
    first.save(tmp_path / "state.pt")
    resumed = _trainer(tiny_train, tiny_val, seed=123)  # a different seed: state must win
    resumed.load(tmp_path / "state.pt")
    resumed.run()
    assert resumed.epoch == straight.epoch == 4
    for a, b in zip(straight.model.parameters(), resumed.model.parameters(), strict=True):
        assert torch.equal(a, b)
    assert [h["psnr"] for h in resumed.history] == [h["psnr"] for h in straight.history]


def test_divergence_ends_cleanly_with_status(tiny_train, tiny_val):
    tr = _trainer(tiny_train, tiny_val, model_lr=1e6, momentum=0.0)
    results = []
    tr.run(lambda r, _: results.append(r))
    assert results[-1].status == "diverged"
    assert math.isnan(results[-1].psnr)
    assert tr.done and len(results) < 4


def test_use_amp_changes_what_runs(tiny_train, tiny_val):
    on = _trainer(tiny_train, tiny_val, use_amp=True)
    off = _trainer(tiny_train, tiny_val, use_amp=False)
    x = torch.rand(2, 3, 8, 8)
    with on._autocast():
        assert on.model(x).dtype == torch.bfloat16  # CPU autocast runs bf16
    with off._autocast():
        assert off.model(x).dtype == torch.float32
    assert not on.scaler.is_enabled()  # the scaler is for fp16 only


def test_frames_longer_than_clips_is_a_config_error(tiny_val):
    from synthetic import make_split

    from trainable.errors import ConfigError

    short = make_split(t=3)
    with pytest.raises(ConfigError, match="`frames` is 5"):
        Trainer(TrainConfig(**{**TINY, "frames": 5}), short, tiny_val)


def test_prefetched_batches_equal_sequential_samples(tiny_train):
    def sampler():
        return PatchSampler(tiny_train, frames=3, patch_size=8, seed=5, device=torch.device("cpu"))

    a, b = sampler(), sampler()
    ahead = list(a.batches(6, 4))
    one_by_one = [b.sample(4) for _ in range(6)]
    for (lr_a, hr_a), (lr_b, hr_b) in zip(ahead, one_by_one, strict=True):
        assert torch.equal(lr_a, lr_b) and torch.equal(hr_a, hr_b)
    # Exactly `count` were drawn: both generators are in the same state afterwards.
    assert torch.equal(a.sample(4)[0], b.sample(4)[0])


def _in_a_thread(fn, *args):
    """``fn(*args)``'s result, or its exception, from a thread; "hung" when it has not returned
    after a minute (a prefetch that lost a batch, or blocks on a full queue, never does)."""
    out = ["hung"]

    def run():
        try:
            out[0] = fn(*args)
        except Exception as e:  # handed to the test
            out[0] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(60)
    return out[0]


def _host_sampler(data, seed=5):
    return PatchSampler(data, frames=3, patch_size=8, seed=seed, device=torch.device("cpu"))


def test_a_consumer_slower_than_the_prefetch_gets_every_batch(tiny_train):
    # A training step takes longer than the producer waits on a full queue (0.1 s); it retries.
    def slowly():
        got = []
        for batch in _host_sampler(tiny_train).batches(5, 4):
            time.sleep(0.3)
            got.append(batch[0])
        return got

    got = _in_a_thread(slowly)
    assert got != "hung" and len(got) == 5
    want = _host_sampler(tiny_train)
    assert all(torch.equal(lr, want.sample(4)[0]) for lr in got)


def test_a_consumer_that_stops_early_stops_the_prefetch(tiny_train):
    def stop_after_one():
        batches = _host_sampler(tiny_train).batches(10, 4)
        next(batches)
        time.sleep(0.3)  # the producer fills the queue and waits
        batches.close()  # the worker is joined: it must see the stop while the queue is full
        return "stopped"

    assert _in_a_thread(stop_after_one) == "stopped"


def test_an_error_while_prefetching_reaches_the_consumer(tiny_train):
    sampler = _host_sampler(tiny_train)
    real, calls = sampler.sample, []

    def fails_second(batch_size):
        calls.append(batch_size)
        if len(calls) == 2:
            raise DataError("clip 'a' vanished")
        return real(batch_size)

    sampler.sample = fails_second
    got = _in_a_thread(lambda: list(sampler.batches(4, 4)))
    assert isinstance(got, DataError) and "vanished" in str(got)


def test_the_host_path_draws_ahead_on_a_thread_the_device_path_in_the_callers(tiny_train):
    # From two batches on, the host path overlaps the step; the device path needs no thread.
    me = threading.current_thread().name
    for gather, count, where in (("auto", 2, {"patch-prefetch"}), ("auto", 1, {me}),
                                 ("torch", 3, {me})):
        sampler = PatchSampler(tiny_train, frames=3, patch_size=8, seed=5,
                               device=torch.device("cpu"), gather=gather)
        real, threads = sampler.sample, set()

        def noted(batch_size, real=real, threads=threads):
            threads.add(threading.current_thread().name)
            return real(batch_size)

        sampler.sample = noted
        assert len(list(sampler.batches(count, 4))) == count
        assert threads == where, (gather, count)


def test_a_loss_mask_leaves_what_it_masks_out_of_the_loss():
    """An output wrong only where the mask is 0 costs nothing; without the mask, it does."""

    class Wrong(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def forward(self, lr):  # HR target + an error confined to the outer 8 HR rows
            out = lr[:, 1:2].repeat_interleave(2, 2).repeat_interleave(2, 3) + self.w
            out[..., :8, :] += 1.0
            return out

    lr = torch.rand(2, 3, 10, 10)
    hr = lr[:, 1:2].repeat_interleave(2, 2).repeat_interleave(2, 3)
    mask = torch.ones_like(hr)
    mask[..., :8, :] = 0.0
    losses = []
    for batch in ((lr, hr, mask), (lr, hr)):
        model = Wrong()
        opt = torch.optim.SGD(model.parameters(), lr=0.0)
        losses.append(train_step(model, opt, torch.amp.GradScaler("cpu", enabled=False), [batch],
                                 autocast=lambda: torch.autocast("cpu", enabled=False),
                                 grad_clip=0.0).item())
    assert losses[0] == 0.0 and losses[1] > 0.1


@pytest.mark.parametrize("gather", ["numpy", "torch"])
def test_loss_border_leaves_out_patch_edges_inside_the_frame_and_keeps_the_frames_own(gather):
    """Each LR pixel holds its frame position (y*16 + x), so each drawn pixel's place in the frame,
    under any flip or rotation, is known; the mask must count it unless it lies within `border`
    of a patch side that is not the frame's own edge."""
    from trainable.store import ClipGroup, SplitData

    size, patch, border = 14, 8, 2
    code = (np.arange(size)[:, None] * 16 + np.arange(size)[None, :]).astype(np.uint8)
    lr_frames = np.broadcast_to(code, (1, 3, size, size)).copy()
    data = SplitData(split="train", scale=2, source="codes", groups=(ClipGroup(
        hr=lr_frames.repeat(2, axis=2).repeat(2, axis=3), lr=lr_frames, centres=(1,),
        names=("a",)),))
    sampler = PatchSampler(data, frames=3, patch_size=patch, seed=1, device=torch.device("cpu"),
                           gather=gather, loss_border=border)
    lr, hr, mask = sampler.sample(400)
    assert mask.shape == hr.shape and torch.equal(mask[:, 0, ::2, ::2].repeat_interleave(
        2, 1).repeat_interleave(2, 2), mask[:, 0])
    codes = (lr[:, 1] * 255).round().long()
    at_edge = 0
    for code, m in zip(codes, mask[:, 0, ::2, ::2], strict=True):
        y, x = code // 16, code % 16
        y0, x0 = int(y.min()), int(x.min())
        assert int(y.max()) == y0 + patch - 1 and int(x.max()) == x0 + patch - 1
        ok = (((y - y0 >= border) | (y0 == 0)) & ((y0 + patch - 1 - y >= border) | (y0 + patch == size))
              & ((x - x0 >= border) | (x0 == 0)) & ((x0 + patch - 1 - x >= border) | (x0 + patch == size)))
        assert torch.equal(m.bool(), ok)
        at_edge += int(y0 == 0 or x0 == 0 or y0 + patch == size or x0 + patch == size)
    assert 0 < at_edge < len(codes)  # both kinds were drawn


def test_loss_border_must_leave_part_of_the_patch():
    from trainable.errors import ConfigError

    assert TrainConfig(patch_size=32, loss_border=4).loss_border == 4
    with pytest.raises(ConfigError, match="loss_border.*patch_size - 2 \\* loss_border >= 4"):
        TrainConfig(patch_size=17, loss_border=7)
    with pytest.raises(ConfigError, match="`loss_border` is -1"):
        TrainConfig(loss_border=-1)


def test_validation_reports_every_target_frame(tiny_train, tiny_val):
    trainer = _trainer(tiny_train, tiny_val, epochs=1)
    result = trainer.run()
    assert len(result.psnr_frames) == tiny_val.num_targets
    assert sum(result.psnr_frames) / len(result.psnr_frames) == pytest.approx(result.psnr, abs=1e-3)
    assert result.to_dict()["psnr_frames"] == list(result.psnr_frames)


@pytest.mark.parametrize(("border", "exact"), [(4, True), (1, False)])
def test_with_border_4_every_counted_output_is_the_whole_frames(border, exact):
    """Border 4 (the receptive-field radius, which covers the bicubic's 2 pixels) makes every
    output the loss counts equal to the output on the whole frame, at patch sides inside the frame
    and at the frame's own edges alike; border 1 does not."""
    from trainable.sampler import _loss_mask

    torch.manual_seed(0)
    model = EarlyFusionESPCN(3, 4, residual=True).eval()
    with torch.no_grad():
        model.sub_pixel.weight.normal_(0, 0.1)  # a network that does more than bicubic
        frame = torch.rand(1, 3, 20, 24)
        whole = model(frame)
        size, agree = 12, []
        for y0, x0 in ((0, 0), (8, 12), (4, 6), (0, 7), (8, 0)):
            out = model(frame[..., y0:y0 + size, x0:x0 + size])
            ref = whole[..., 4 * y0:4 * (y0 + size), 4 * x0:4 * (x0 + size)]
            zero = np.zeros(1, dtype=np.int64)
            m = _loss_mask(np.arange(size), np.array([y0]), np.array([x0]), 20, 24, border,
                           zero, zero, zero)[0]
            m = torch.from_numpy(m).repeat_interleave(4, 0).repeat_interleave(4, 1)
            assert m.any()
            agree.append(torch.allclose(out[0, 0][m], ref[0, 0][m], atol=1e-5))
    assert all(agree) if exact else not all(agree)


@pytest.mark.parametrize("name", ["cuda", "auto"])
def test_a_cuda_device_is_resolved_with_its_index(monkeypatch, name):
    # torch.cuda's per-process memory fraction (and other calls) raise on a bare 'cuda' device;
    # every Trainer on an H100 failed at construction until the index was filled in.
    from trainable.loop import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 3)
    assert resolve_device(name) == torch.device("cuda", 3)


def test_cuda_without_a_device_is_a_config_error(monkeypatch):
    from trainable.errors import ConfigError
    from trainable.loop import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="`device` is 'cuda', but no CUDA device"):
        resolve_device("cuda")
