"""A fused group against solo Trainers: each member must train as its configuration trains alone
(same seed: same initial weights, same patches), and must not feel the other members."""

import dataclasses
import math

import pytest
import torch

from trainable import sampler
from trainable.config import TrainConfig
from trainable.errors import ConfigError
from trainable.fused import GROUP_FIELDS, MEMBER_FIELDS, SHARED_FIELDS, FusedTrainer
from trainable.loop import Trainer, train_step
from trainable.model import EarlyFusionESPCN
from trainable.sampler import PatchSampler

TINY = dict(epochs=3, epoch_samples=64, batch_size=8, validation_interval=1, use_amp=False,
            patch_size=8, num_threads=1, residual=True, optimizer="adam", weight_decay=0.0,
            device="cpu")
FP16 = dict(use_amp=True, amp_dtype="float16")  # a loss scale per member, on the CPU too
# Three members that differ in everything a member keeps its own: seed, lr, schedule.
MEMBERS = [dict(seed=0, model_lr=1e-3, lr_scheduler_milestones=(0.5,)),
           dict(seed=1, model_lr=3e-3, lr_scheduler_milestones=(0.3, 0.7), lr_scheduler_gamma=0.3),
           dict(seed=2, model_lr=5e-4, lr_scheduler_milestones=(0.6,))]


def _cfg(**over):
    return TrainConfig(**{**TINY, **over})


def _group(tiny_train, tiny_val, cfgs, capacity=None, slots=None, grouped=None):
    """A group of ``cfgs``; ``grouped=True``: the card's grouped convolutions, on the CPU."""
    group = FusedTrainer(cfgs[0], tiny_train, tiny_val, capacity or len(cfgs), grouped=grouped)
    for slot, cfg in zip(slots or range(len(cfgs)), cfgs, strict=True):
        group.add(slot, cfg)
    return group


def _run(group):
    """Every interval until all members are done: {slot: [ValidationResult, ...]}."""
    out = {slot: [] for slot in group.members}
    while any(not group.done(s) for s in group.members):
        for slot, result in group.run_interval().items():
            out[slot].append(result)
    return out


def _solo(tiny_train, tiny_val, cfg):
    trainer = Trainer(cfg, tiny_train, tiny_val)
    results = []
    trainer.run(lambda r, _: results.append(r))
    return trainer, results


def _weights(group, slot):
    return group.member_state(slot)["model"]


def _equal_weights(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def _assert_curves_match(fused, solo, tol_db=0.01):
    assert [r.epoch for r in fused] == [r.epoch for r in solo]
    assert [r.samples for r in fused] == [r.samples for r in solo]
    assert [r.status for r in fused] == [r.status for r in solo]
    for f, s in zip(fused, solo, strict=True):
        assert f.lr == s.lr and f.bicubic_psnr == s.bicubic_psnr and f.max_epochs == s.max_epochs
        assert len(f.psnr_frames) == len(s.psnr_frames)
        assert abs(f.psnr - s.psnr) <= tol_db, (f.epoch, f.psnr, s.psnr)
        assert f.loss == pytest.approx(s.loss, rel=1e-3)


# What a validation reports of the wall clock: everything else of a member's results is its solo
# Trainer's, to the last bit, on the CPU.
_TIMINGS = ("samples_per_s", "steps_per_s", "data_time_share")


def _assert_curves_equal(fused, solo):
    def numbers(r):
        return {k: v for k, v in r.to_dict().items() if k not in _TIMINGS}

    assert [numbers(r) for r in fused] == [numbers(r) for r in solo]
    assert all(0 <= r.data_time_share <= 1 for r in fused)  # a share of the interval's time


def test_every_config_field_is_shared_per_member_or_the_groups():
    names = [f.name for f in dataclasses.fields(TrainConfig)]
    kinds = SHARED_FIELDS + MEMBER_FIELDS + GROUP_FIELDS
    assert sorted(kinds) == sorted(names) and len(set(kinds)) == len(kinds)


def test_members_of_another_shape_are_refused_with_the_field_named(tiny_train, tiny_val):
    group = FusedTrainer(_cfg(), tiny_train, tiny_val, 2)
    group.add(0, _cfg(seed=3, model_lr=1e-2, grad_clip=1.0, epochs=2))  # per-member fields
    with pytest.raises(ConfigError, match="`batch_size` is 16, but every member .* must have 8"):
        group.add(1, _cfg(batch_size=16))
    with pytest.raises(ConfigError, match="`use_amp` is True, but every member .* must have False"):
        group.add(1, _cfg(**FP16))
    bf16 = FusedTrainer(_cfg(use_amp=True), tiny_train, tiny_val, 2)
    with pytest.raises(ConfigError, match="`amp_dtype` is 'float16', but .* must have 'bfloat16'"):
        bf16.add(0, _cfg(**FP16))
    with pytest.raises(ConfigError, match="`slot` is 0, but that slot is taken"):
        group.add(0, _cfg())
    with pytest.raises(ConfigError, match="`slot` is 1, but it holds no member"):
        group.member_state(1)
    with pytest.raises(ConfigError, match=r"^The value of `compile` is True, but a fused group "
                                          r"runs its own fused step: set compile: false\.$"):
        FusedTrainer(_cfg(compile=True), tiny_train, tiny_val, 2)
    with pytest.raises(ConfigError, match="`capacity` is 0"):
        FusedTrainer(_cfg(), tiny_train, tiny_val, 0)
    # bf16 spelled 'auto' on the CPU is the same shape as bf16 spelled out.
    assert (FusedTrainer.shape_key(_cfg(use_amp=True))
            == FusedTrainer.shape_key(_cfg(use_amp=True, amp_dtype="bfloat16")))


@pytest.mark.parametrize("border", [0, 2])
def test_each_member_draws_exactly_its_solo_patches_wherever_it_is_in_its_stream(
        tiny_train, tiny_val, monkeypatch, border):
    # Chunks of 4 batches and windows of 4: windows cross chunk boundaries, and the members sit
    # at different places of their chunks (one resumed 5 batches in, one joins later).
    monkeypatch.setattr(sampler, "_CHUNK_HR_PIXELS", 4 * 8 * 32 * 32)
    cfg = _cfg(loss_border=border, residual=False)  # the targets are then the HR patches
    group = FusedTrainer(cfg, tiny_train, tiny_val, 3, window_hr_pixels=4 * 8 * 3 * 32 * 32)
    assert group._streams.per == 4 and group._streams.window == 4
    streams = group._streams
    solo = {}
    for slot, seed, drawn in ((0, 11, 0), (2, 12, 5)):
        group.add(slot, cfg.replace(seed=seed))
        streams.assign(slot, seed, drawn)
        solo[slot] = PatchSampler(tiny_train, frames=3, patch_size=8, seed=seed,
                                  device=torch.device("cpu"), loss_border=border)
        solo[slot].load_state_dict({"kind": "torch-chunks", "seed": seed, "drawn": drawn})

    def check(active, steps):
        for _ in range(steps):
            (batch,) = streams.next_batches(active, 1, horizon=9)
            for slot in active:
                want = solo[slot].sample(8)
                assert torch.equal(batch.x[:, 3 * slot:3 * slot + 3], want[0])
                assert torch.equal(batch.target[:, slot:slot + 1], want[1])
                if border:
                    m = batch.mask[:, slot, :, 0, :, 0]
                    m = m.repeat_interleave(4, 1).repeat_interleave(4, 2)
                    assert torch.equal(m[:, None], want[2])
                    assert batch.weight[0, slot].item() == pytest.approx(1 / want[2].sum().item())

    check([0, 2], 5)
    group.add(1, cfg.replace(seed=13))  # joins at its stream's start, the others mid-chunk
    solo[1] = PatchSampler(tiny_train, frames=3, patch_size=8, seed=13, device=torch.device("cpu"),
                           loss_border=border)
    check([0, 1, 2], 2)
    check([1], 1)  # the others idle inside a window: their streams must not move
    check([0, 1, 2], 6)
    assert streams.state_dict(2) == {"kind": "torch-chunks", "seed": 12, "drawn": 5 + 5 + 2 + 6}


class _Capture(torch.optim.SGD):
    """Keeps the gradients train_step hands to the optimizer, and leaves the weights alone."""

    def step(self, closure=None):
        self.grads = [p.grad.detach().clone() for p in self.param_groups[0]["params"]]


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("over", [{}, dict(loss_border=2, gradient_accumulation_steps=2),
                                  dict(use_amp=True, amp_dtype="bfloat16"), FP16])
def test_the_first_updates_gradients_are_the_solo_trainers(tiny_train, tiny_val, over, grouped):
    """Per member (the CPU's form) bit for bit; grouped (the card's) to float rounding."""
    cfgs = [_cfg(**over, **m) for m in MEMBERS]
    group = _group(tiny_train, tiny_val, cfgs, grouped=grouped)
    group._train({0: 1, 1: 1, 2: 1})
    for slot, cfg in enumerate(cfgs):
        trainer = Trainer(cfg, tiny_train, tiny_val)
        batches = [trainer.sampler.sample(cfg.batch_size)
                   for _ in range(cfg.gradient_accumulation_steps)]
        capture = _Capture(trainer.model.parameters(), lr=0.0)
        train_step(trainer.model, capture, trainer.scaler, batches, autocast=trainer._autocast,
                   grad_clip=0.0)
        for s, solo_grad in zip(group._segments, capture.grads, strict=True):
            fused_grad = group._member_view(group._grad, s, slot)
            scale = solo_grad.abs().max()
            assert scale > 0
            if grouped:
                torch.testing.assert_close(fused_grad, solo_grad, rtol=1e-5, atol=1e-5 * scale)
            else:
                assert torch.equal(fused_grad, solo_grad), s.key


@pytest.mark.parametrize("over", [
    {},  # Adam, fp32
    dict(optimizer="sgd", momentum=0.9, weight_decay=1e-4),
    dict(grad_clip=0.05, weight_decay=1e-3),
    # The border's mask, with batches of 4 patches of 8 pixels: its two sizes told apart; and
    # each member scored with the group's crop.
    dict(gradient_accumulation_steps=2, loss_border=1, batch_size=4, crop_border=2),
    dict(use_amp=True),  # bf16, the CPU's mixed precision
    dict(FP16, optimizer="sgd", momentum=0.9),  # a loss scale per member
    FP16,  # with Adam: to float rounding (docs/training.md, "Reproducing a trial")
])
def test_members_train_bit_for_bit_as_solo_trainers(tiny_train, tiny_val, over):
    """On the CPU every member steps through its own network with train_step's operators, and
    the flat update does torch.optim's arithmetic: each member's validations, losses and weights
    are those of a solo Trainer of its configuration, to the last bit. fp16 Adam is the
    exception: its step size is taken on the device in fp32 (which members skip is known only
    there), torch.optim's in double."""
    cfgs = [_cfg(**over, **m) for m in MEMBERS]
    if "grad_clip" in over:  # clipping per member: one member does not clip
        cfgs[2] = cfgs[2].replace(grad_clip=0.0)
    group = _group(tiny_train, tiny_val, cfgs)
    fused = _run(group)
    assert len({tuple(r.psnr for r in rs) for rs in fused.values()}) == 3  # they really differ
    for slot, cfg in enumerate(cfgs):
        trainer, solo = _solo(tiny_train, tiny_val, cfg)
        if over is FP16:
            _assert_curves_match(fused[slot], solo)
            continue
        _assert_curves_equal(fused[slot], solo)
        assert _equal_weights(_weights(group, slot), trainer.model.state_dict())


@pytest.mark.parametrize("over", [{}, dict(gradient_accumulation_steps=2, loss_border=1), FP16])
def test_the_cards_grouped_step_matches_solo_trainers_to_float_rounding(tiny_train, tiny_val,
                                                                          over):
    """The grouped convolutions (a card's form, run here on the CPU) round the last bits
    differently from one network's convolutions: the curves agree to float rounding."""
    cfgs = [_cfg(**over, **m) for m in MEMBERS]
    fused = _run(_group(tiny_train, tiny_val, cfgs, grouped=True))
    for slot, cfg in enumerate(cfgs):
        _assert_curves_match(fused[slot], _solo(tiny_train, tiny_val, cfg)[1])


def test_members_with_other_budgets_and_uneven_intervals_match_solo(tiny_train, tiny_val):
    # 60 samples an epoch at 8 a batch: intervals of 8 and 7 updates, so members that are at
    # different epochs need different numbers of updates and some idle; one member stops early.
    cfgs = [_cfg(epoch_samples=60, epochs=e, **m) for e, m in zip((4, 2, 3), MEMBERS, strict=True)]
    group = _group(tiny_train, tiny_val, cfgs[:2], capacity=3)
    first = group.run_interval()
    group.add(2, cfgs[2])  # joins one interval later: it is now 8 updates behind
    results = {0: [first[0]], 1: [first[1]], 2: []}
    for slot, rs in _run(group).items():
        results[slot] += rs
    assert [r.epoch for r in results[1]] == [1, 2]
    for slot, cfg in enumerate(cfgs):
        _assert_curves_equal(results[slot], _solo(tiny_train, tiny_val, cfg)[1])


# The last case has 40 updates an interval: the divergence check after 32 updates (where a
# solo Trainer checks) stops the member inside the interval.
@pytest.mark.parametrize("over", [{}, FP16, dict(epoch_samples=320, epochs=2)])
def test_a_diverging_member_leaves_the_others_bitwise_unchanged(tiny_train, tiny_val, over):
    cfgs = [_cfg(**over, **m) for m in MEMBERS]
    calm = _group(tiny_train, tiny_val, cfgs)
    calm_results = _run(calm)
    wild_cfg = cfgs[1].replace(model_lr=1e30)
    wild = _group(tiny_train, tiny_val, [cfgs[0], wild_cfg, cfgs[2]])
    wild_results = _run(wild)
    last = wild_results[1][-1]
    assert last.status == "diverged" and math.isnan(last.psnr) and wild.done(1)
    # It diverges where the solo Trainer does, at the same check.
    solo = _solo(tiny_train, tiny_val, wild_cfg)[1]
    assert [(r.epoch, r.samples, r.status) for r in wild_results[1]] == [
        (r.epoch, r.samples, r.status) for r in solo]
    for slot in (0, 2):
        assert _equal_weights(_weights(calm, slot), _weights(wild, slot))
        assert [r.psnr for r in calm_results[slot]] == [r.psnr for r in wild_results[slot]]
        assert [r.loss for r in calm_results[slot]] == [r.loss for r in wild_results[slot]]
        assert all(r.status != "diverged" for r in wild_results[slot])


def test_a_group_whose_every_member_diverges_ends_them_all(tiny_train, tiny_val):
    """40 updates an interval: every member has diverged at the check after 32, and the
    interval ends there for all of them."""
    cfgs = [_cfg(epoch_samples=320, epochs=2, **m).replace(model_lr=1e30) for m in MEMBERS[:2]]
    group = _group(tiny_train, tiny_val, cfgs)
    results = group.run_interval()
    assert [(r.status, r.samples) for r in results.values()] == [("diverged", 256)] * 2
    assert group.done(0) and group.done(1)


def test_an_intervals_speed_and_data_time_are_over_the_groups_own_time(tiny_train, tiny_val):
    """Each member's updates a second are over the time the group trained (the members shared
    it): at least its updates over the interval's wall time, validation included. Its data
    time is every draw's: with each draw made 10 ms slower, at least 80 ms of the interval."""
    import time

    group = _group(tiny_train, tiny_val, [_cfg(**m) for m in MEMBERS])
    draw = group._streams.next_batches

    def slow_draw(*args, **kwargs):
        time.sleep(0.01)
        return draw(*args, **kwargs)

    group._streams.next_batches = slow_draw
    start = time.perf_counter()
    results = group.run_interval()
    wall = time.perf_counter() - start
    for r in results.values():  # 64 samples at 8 a batch: 8 updates, 8 draws
        assert 8 / wall <= r.steps_per_s < math.inf
        assert r.samples_per_s == pytest.approx(8 * r.steps_per_s)
        elapsed = 8 / r.steps_per_s  # the group's training time in the interval
        assert r.data_time_share <= 1 and r.data_time_share * elapsed >= 0.08


def test_a_member_of_one_update_an_interval_and_all_of_its_frames(tiny_train, tiny_val):
    """An epoch of one batch (each interval one update: its mean loss is that update's), and a
    member that takes every frame the data has."""
    cfgs = [_cfg(epoch_samples=8, epochs=2, frames=tiny_train.max_frames, **m) for m in MEMBERS[:2]]
    fused = _run(_group(tiny_train, tiny_val, cfgs))
    for slot, cfg in enumerate(cfgs):
        _assert_curves_equal(fused[slot], _solo(tiny_train, tiny_val, cfg)[1])


def test_a_slot_outside_the_group_or_a_compiled_member_is_refused(tiny_train, tiny_val):
    group = FusedTrainer(_cfg(), tiny_train, tiny_val, 2)
    for slot in (-1, 2):
        with pytest.raises(ConfigError, match=rf"^The value of `slot` is {slot}, but must be in "
                                              r"\[0, 2\)\.$"):
            group.add(slot, _cfg())
        with pytest.raises(ConfigError, match=rf"^The value of `slot` is {slot}, but it holds no "
                                              r"member \(members: \[\]\)\.$"):
            group.remove(slot)
    with pytest.raises(ConfigError, match=r"^The value of `compile` is True, but a fused group "
                                          r"runs its own fused step: set compile: false\.$"):
        group.add(0, _cfg(compile=True))
    with pytest.raises(ConfigError, match=r"^The value of `nesterov` is True, but a fused "
                                          r"group's SGD update has no Nesterov momentum: train it "
                                          r"solo \(resources.fuse 1\)\.$"):
        group.add(0, _cfg(optimizer="sgd", momentum=0.9, nesterov=True))


def test_a_member_starts_from_its_init_weights_as_a_solo_trainer_does(tiny_train, tiny_val,
                                                                      tmp_path):
    earlier = Trainer(_cfg(**MEMBERS[1]), tiny_train, tiny_val)
    earlier.run_interval()
    earlier.save(tmp_path / "earlier.pt")
    cfg = _cfg(**MEMBERS[0], init_weights=str(tmp_path / "earlier.pt"))
    fused = _run(_group(tiny_train, tiny_val, [cfg, _cfg(**MEMBERS[2])]))
    _assert_curves_equal(fused[0], _solo(tiny_train, tiny_val, cfg)[1])


def test_fp16_an_overflowing_member_skips_only_its_own_steps(tiny_train, tiny_val):
    """A member whose loss scale is far too large overflows and skips steps while its scale
    backs off, exactly as a solo Trainer with a GradScaler does; the others do not notice."""
    cfgs = [_cfg(**FP16, **m) for m in MEMBERS]
    loud = Trainer(cfgs[1], tiny_train, tiny_val)
    # fp16's backward overflows at this scale: the scale must back off before any step counts.
    loud.scaler.load_state_dict({**loud.scaler.state_dict(), "scale": 2.0**30})
    state = loud.state_dict()
    normal = _group(tiny_train, tiny_val, cfgs)
    skipping = _group(tiny_train, tiny_val, cfgs)
    skipping.remove(1)
    skipping.add(1, cfgs[1], state)
    for group in (normal, skipping):
        group.run_interval()
    for slot in (0, 2):
        assert _equal_weights(_weights(normal, slot), _weights(skipping, slot))
    loud.run_interval()
    fused = skipping.member_state(1)
    assert fused["scaler"] == loud.scaler.state_dict()
    assert fused["scaler"]["scale"] < 2.0**30
    skipped = loud.optimizer.state_dict()["state"][0]["step"]
    assert fused["optimizer"]["state"][0]["step"] == skipped < 8  # 8 updates, some skipped
    for key, w in fused["model"].items():
        torch.testing.assert_close(w, loud.model.state_dict()[key], rtol=1e-3, atol=1e-4)


def test_a_member_checkpoint_is_a_trainer_checkpoint(tiny_train, tiny_val, tmp_path):
    """A member's checkpoint is what a solo Trainer of its configuration saves at the same point,
    entry by entry (the numbers up to float rounding), and a solo Trainer continues from it."""
    # A warm-up and a cosine: the LR moves at every update, so the LR of the last update (what a
    # Trainer's param_groups hold) differs from that of the next one.
    cfgs = [_cfg(**MEMBERS[0]),
            _cfg(seed=1, model_lr=3e-3, lr_schedule="cosine", warmup_fraction=0.8,
                 lr_scheduler_milestones=None, lr_scheduler_gamma=None, lr_min_fraction=0.1,
                 lr_cosine_end=1.0)]
    group = _group(tiny_train, tiny_val, cfgs)
    solo = Trainer(cfgs[1], tiny_train, tiny_val)
    for _ in range(2):
        group.run_interval()
        solo.run_interval()
    state, want = group.member_state(1), solo.state_dict()
    assert state.keys() == want.keys()
    assert state["config"] == want["config"] and state["samples_seen"] == 128
    assert group.samples_seen(1) == 128 and group.status(1) == state["status"] == "running"
    for key in ("scaler", "sampler", "samples_seen", "epoch", "best_epoch", "status"):
        assert state[key] == want[key], key
    # The global RNG is the process's (the group and the solo Trainer share it here): its form.
    assert state["torch_rng"].shape == want["torch_rng"].shape
    assert state["best_psnr"] == pytest.approx(want["best_psnr"], abs=0.01)
    assert [h.keys() for h in state["history"]] == [h.keys() for h in want["history"]]
    assert [h["lr"] for h in state["history"]] == [h["lr"] for h in want["history"]]
    assert state["model"].keys() == want["model"].keys()
    for k, w in want["model"].items():
        torch.testing.assert_close(state["model"][k], w, rtol=1e-3, atol=1e-5)
    opt, solo_opt = state["optimizer"], want["optimizer"]
    assert opt["param_groups"] == solo_opt["param_groups"]
    assert opt["param_groups"][0]["lr"] == cfgs[1].lr_at(128 - 8)  # its last update's
    assert opt["state"].keys() == solo_opt["state"].keys()
    for i, entry in solo_opt["state"].items():
        assert opt["state"][i].keys() == entry.keys()
        assert torch.equal(opt["state"][i]["step"], entry["step"])
        for k in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(opt["state"][i][k], entry[k], rtol=1e-3,
                                       atol=1e-4 * float(entry[k].abs().max()))
    torch.save(state, tmp_path / "member.pt")
    loaded = Trainer(cfgs[1].replace(seed=99), tiny_train, tiny_val)
    loaded.load(tmp_path / "member.pt")  # the safe loader reads it
    # What export and analysis read: the model as an EarlyFusionESPCN state dict.
    EarlyFusionESPCN(3, 4, residual=True).load_state_dict(state["model"])
    # The solo run continues from it on the same patches, equal to the group's own
    # continuation up to float rounding.
    rest = []
    loaded.run(lambda r, _: rest.append(r))
    _assert_curves_match(_run(group)[1], rest)


@pytest.mark.parametrize("over", [{}, dict(optimizer="sgd", momentum=0.9, weight_decay=1e-4)],
                         ids=["adam", "sgd-momentum"])
def test_a_member_resumed_in_another_group_continues_bitwise(tiny_train, tiny_val, over):
    """The promise: a member checkpoint resumed in a group of the same capacity, in the same
    slot, continues exactly as the uninterrupted member does (other members may differ). With
    SGD its momentum buffers go through the checkpoint under torch.optim's key."""
    cfgs = [_cfg(**m, **over) for m in MEMBERS]
    straight = _group(tiny_train, tiny_val, cfgs)
    straight_results = _run(straight)
    first = _group(tiny_train, tiny_val, cfgs)
    first.run_interval()
    state = first.member_state(2)
    other = FusedTrainer(cfgs[0], tiny_train, tiny_val, 3)
    other.add(0, cfgs[1].replace(seed=7))
    other.add(2, cfgs[2], state)
    assert other.member_state(0)["optimizer"]["state"] == {}  # the fresh member's steps stay 0
    assert all(entry.keys() == ({"step", "exp_avg", "exp_avg_sq"} if not over
                                else {"momentum_buffer"})
               for entry in state["optimizer"]["state"].values()) and state["optimizer"]["state"]
    rest = _run(other)[2]
    assert _equal_weights(_weights(other, 2), _weights(straight, 2))
    assert [r.psnr for r in rest] == [r.psnr for r in straight_results[2][1:]]


def test_a_solo_checkpoint_continues_in_a_group_as_it_would_alone(tiny_train, tiny_val):
    cfg = _cfg(**MEMBERS[1])
    solo = Trainer(cfg, tiny_train, tiny_val)
    solo.run_interval()
    state = solo.state_dict()
    group = FusedTrainer(cfg, tiny_train, tiny_val, 2)
    group.add(1, cfg, state)
    assert torch.equal(group.member_state(1)["torch_rng"], state["torch_rng"])  # kept as given
    fused = _run(group)[1]
    rest = []
    solo.run(lambda r, _: rest.append(r))
    _assert_curves_match(fused, rest)
    assert len(group.member_state(1)["history"]) == 3


def test_a_completed_member_resumed_with_a_larger_budget_carries_on(tiny_train, tiny_val):
    short = _cfg(**MEMBERS[0], epochs=1)
    solo = Trainer(short, tiny_train, tiny_val)
    solo.run(lambda r, _: None)
    longer = short.replace(epochs=2)
    group = FusedTrainer(longer, tiny_train, tiny_val, 2)
    group.add(0, longer, solo.state_dict())
    assert group.status(0) == "running"
    assert [(r.epoch, r.status) for r in group.run_interval().values()] == [(2, "completed")]


def test_a_refilled_slot_starts_fresh_and_the_others_are_unaffected(tiny_train, tiny_val):
    cfgs = [_cfg(**m) for m in MEMBERS]
    kept = _group(tiny_train, tiny_val, cfgs[:2])
    kept_results = _run(kept)
    refilled = _group(tiny_train, tiny_val, cfgs[:2])
    refilled.run_interval()
    refilled.remove(1)  # as when ASHA stops a trial
    assert refilled.free_slots() == [1]
    refilled.add(1, cfgs[2])  # the next trial takes the slot, from its start
    results = _run(refilled)
    # The member that stayed did not notice.
    assert _equal_weights(_weights(kept, 0), _weights(refilled, 0))
    assert [r.psnr for r in kept_results[0][1:]] == [r.psnr for r in results[0]]
    # The newcomer trained exactly as it does in a group of its own, and as it does alone.
    alone = FusedTrainer(cfgs[2], tiny_train, tiny_val, 2)
    alone.add(1, cfgs[2])
    alone_results = _run(alone)[1]
    assert _equal_weights(_weights(alone, 1), _weights(refilled, 1))
    assert [r.psnr for r in alone_results] == [r.psnr for r in results[1]]
    _assert_curves_match(results[1], _solo(tiny_train, tiny_val, cfgs[2])[1])


def test_the_grouped_update_costs_the_same_operator_calls_for_any_number_of_members(
        tiny_train, tiny_val):
    # The card's form (on the CPU each member runs its own network's operators).
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        calls = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            Count.calls += 1
            return func(*args, **(kwargs or {}))

    def calls(n, **over):
        group = _group(tiny_train, tiny_val, [_cfg(**over, seed=i) for i in range(n)],
                       grouped=True)
        group._train(dict.fromkeys(range(n), 1))  # warm-up
        batches = group._streams.next_batches(list(range(n)), 1, horizon=1)
        Count.calls = 0
        with Count():
            group._update(batches, list(range(n)))
        return Count.calls

    for over in ({}, FP16, dict(optimizer="sgd", grad_clip=1.0)):
        assert calls(1, **over) == calls(4, **over)


def test_a_checkpoint_of_another_optimizer_is_refused_naming_both(tiny_train, tiny_val):
    adam = Trainer(_cfg(**MEMBERS[0]), tiny_train, tiny_val)
    adam.run_interval()
    sgd = _cfg(**MEMBERS[0], optimizer="sgd", momentum=0.9)
    group = FusedTrainer(sgd, tiny_train, tiny_val, 2)
    with pytest.raises(ConfigError, match=r"^The checkpoint's optimizer state has \['exp_avg', "
                                          r"'exp_avg_sq', 'step'\], but a sgd member needs "
                                          r"\['momentum_buffer'\]\.$"):
        group.add(0, sgd, adam.state_dict())


def test_a_checkpoint_whose_optimizer_has_no_state_is_refused(tiny_train, tiny_val):
    """torch writes an optimizer's ``state`` always (empty before its first step): a checkpoint
    without one was edited, and is refused, not read as a member not yet stepped."""
    solo = Trainer(_cfg(**MEMBERS[0]), tiny_train, tiny_val)
    solo.run_interval()
    state = solo.state_dict()
    del state["optimizer"]["state"]
    group = FusedTrainer(_cfg(**MEMBERS[0]), tiny_train, tiny_val, 2)
    with pytest.raises(ConfigError, match=r"^The checkpoint's optimizer has no `state`"):
        group.add(0, _cfg(**MEMBERS[0]), state)
