"""A fused group's update (trainable.fused_update.FlatUpdate) against torch.optim and
torch.amp.GradScaler, one member at a time: each member's numbers are those of its own optimizer
(and GradScaler) stepping alone, and a member that does not step stays bitwise as it is.

Two members of six elements each, in two parameter segments (as a group lays out a network's
parameters), with gradients given by hand: fast enough to count a loss scale up to its growth."""

from __future__ import annotations

import pytest
import torch

from trainable import fused_update
from trainable.fused_update import FlatUpdate, MemberStep

SIZES = (4, 2)  # elements per member of each segment (a weight and a bias)
N = 2


def _flat(optimizer: str, scaled: bool) -> FlatUpdate:
    segments, member_of, at = [], [], 0
    for size in SIZES:
        segments.append((at, size))
        member_of += [m for m in range(N) for _ in range(size)]
        at += N * size
    flat = FlatUpdate(optimizer, N, torch.tensor(member_of), segments, scaled=scaled)
    flat.cover_steps(10)  # as FusedTrainer.add does for its members' budgets
    return flat


class _Solo:
    """One member as a Trainer steps it: its own parameters, optimizer and GradScaler."""

    def __init__(self, optimizer: str, scaled: bool, weights: list[torch.Tensor], step: MemberStep):
        self.params = [w.clone().requires_grad_() for w in weights]
        if optimizer == "adam":
            self.opt: torch.optim.Optimizer = torch.optim.Adam(
                self.params, lr=step.lr, weight_decay=step.weight_decay)
        else:
            self.opt = torch.optim.SGD(self.params, lr=step.lr, momentum=step.momentum,
                                       weight_decay=step.weight_decay)
        self.scaler = torch.amp.GradScaler("cpu", enabled=scaled)
        self.clip = step.grad_clip

    def step(self, grads: list[torch.Tensor]) -> list[torch.Tensor]:
        """One update whose (unscaled) gradients are ``grads``; returns them scaled, as the
        backward hands them to the fused buffer."""
        loss = sum((p * g).sum() for p, g in zip(self.params, grads, strict=True))
        self.scaler.scale(loss).backward()
        scaled = [p.grad.detach().clone() for p in self.params]
        if self.clip > 0:
            self.scaler.unscale_(self.opt)
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        self.opt.zero_grad(set_to_none=True)
        return scaled

    def state(self) -> list[dict[str, torch.Tensor]]:
        return [self.opt.state.get(p, {}) for p in self.params]


def _member(flat: FlatUpdate, buf: torch.Tensor, slot: int) -> list[torch.Tensor]:
    return [v.clone() for v in flat.views(buf, slot)]


def _snapshot(flat: FlatUpdate, slot: int) -> list[torch.Tensor]:
    out = _member(flat, flat.params, slot) + [t for s in flat.states for t in _member(flat, s, slot)]
    if flat.scaled:
        out += [flat.scale[slot].clone(), flat.tracker[slot].clone()]
    return out + [torch.tensor(flat.step_count(slot))]


def _check_against(flat: FlatUpdate, slot: int, solo: _Solo) -> None:
    for got, want in zip(_member(flat, flat.params, slot), solo.params, strict=True):
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-7)
    keys = ("exp_avg", "exp_avg_sq") if flat.adam else ("momentum_buffer",)
    for state in solo.state():
        if state:
            assert int(state.get("step", flat.step_count(slot))) == flat.step_count(slot)
    for buf, key in zip(flat.states, keys, strict=True):
        for got, state in zip(_member(flat, buf, slot), solo.state(), strict=True):
            want = state.get(key)
            torch.testing.assert_close(got, torch.zeros_like(got) if want is None else want,
                                       rtol=1e-5, atol=1e-7)
    assert flat.scaler_state(slot) == (solo.scaler.state_dict() if flat.scaled else {})


@pytest.mark.parametrize("scaled", [False, True], ids=["fp32", "fp16-scaler"])
@pytest.mark.parametrize("optimizer, step0, step1", [
    ("adam", MemberStep(0, 1e-2, 1e-2, 0.0, 0.0), MemberStep(1, 3e-2, 0.0, 0.0, 0.5)),
    ("sgd", MemberStep(0, 1e-1, 1e-2, 0.9, 0.0), MemberStep(1, 5e-2, 0.0, 0.5, 0.5)),
])
def test_each_member_steps_as_its_own_optimizer_and_an_idle_one_stays_bitwise(
        optimizer, step0, step1, scaled):
    """Member 1 idles at updates 2 and 3 (as one with fewer updates to its next validation
    does): its weights, optimizer state (SGD's momentum too), step count and loss scale must be
    bitwise what they were, and afterwards it must go on as its optimizer alone would."""
    gen = torch.Generator().manual_seed(0)
    flat = _flat(optimizer, scaled)
    flat.params.copy_(torch.randn(flat.params.shape, generator=gen))
    solos = [_Solo(optimizer, scaled, _member(flat, flat.params, s.slot), s) for s in (step0, step1)]
    idle_at = {2, 3}
    for t in range(6):
        steps = [step0] if t in idle_at else [step0, step1]
        before = _snapshot(flat, 1)
        grads = {s.slot: [torch.randn(size, generator=gen) for size in SIZES] for s in steps}
        if scaled and t == 4:  # member 0 overflows: it skips its step, its scale backs off
            grads[0][1][0] = float("inf")
        flat.prepare(steps)
        for s in steps:
            for view, g in zip(flat.views(flat.grad, s.slot), solos[s.slot].step(grads[s.slot]),
                               strict=True):
                view.copy_(g)
        flat.apply()
        if t in idle_at:
            after = _snapshot(flat, 1)
            assert all(torch.equal(a, b) for a, b in zip(before, after, strict=True)), t
    for s in (step0, step1):
        _check_against(flat, s.slot, solos[s.slot])
    assert flat.step_count(1) == 4 and flat.step_count(0) == (5 if scaled else 6)


@pytest.mark.parametrize("tracker, inf", [(1998, False), (1999, False), (1999, True), (0, True)])
def test_a_members_loss_scale_grows_and_backs_off_as_a_grad_scalers(tracker, inf):
    """At 2000 finite steps in a row a GradScaler doubles its scale (on the 2000th, not after
    it) and restarts its count; a non-finite gradient halves it. Counted from 1998 and 1999, not
    through 2000 real steps."""
    flat = _flat("adam", scaled=True)
    solo = _Solo("adam", True, _member(flat, flat.params, 0), MemberStep(0, 1e-3, 0.0, 0.0, 0.0))
    state = {**solo.scaler.state_dict(), "_growth_tracker": tracker}
    solo.scaler.load_state_dict(state)
    flat.load_scaler(0, state)
    flat.load_scaler(1, {**state, "scale": 4.0, "_growth_tracker": 1999})  # idles: stays
    grads = [torch.ones(size) for size in SIZES]
    if inf:
        grads[0][0] = float("inf")
    flat.prepare([MemberStep(0, 1e-3, 0.0, 0.0, 0.0)])
    for view, g in zip(flat.views(flat.grad, 0), solo.step(grads), strict=True):
        view.copy_(g)
    flat.apply()
    want = solo.scaler.state_dict()
    assert flat.scaler_state(0) == want
    assert want["scale"] == {(1998, False): 2.0**16, (1999, False): 2.0**17}.get((tracker, inf),
                                                                                 2.0**15)
    assert flat.scaler_state(1) == {**state, "scale": 4.0, "_growth_tracker": 1999}


def test_a_scale_that_would_overflow_does_not_grow_and_its_count_restarts():
    flat = _flat("sgd", scaled=True)
    top = fused_update._MAX_GROWABLE * 1.5  # doubling it would pass float32's max
    flat.load_scaler(0, {"scale": top, "_growth_tracker": 1999})
    flat.load_scaler(1, {"scale": 2.0**16, "_growth_tracker": 1999})
    flat.prepare([MemberStep(0, 1e-3, 0.0, 0.0, 0.0), MemberStep(1, 1e-3, 0.0, 0.0, 0.0)])
    flat.grad.fill_(1e-30)  # finite once scaled, for both
    flat.apply()
    assert flat.scaler_state(0)["scale"] == pytest.approx(top)
    assert flat.scaler_state(0)["_growth_tracker"] == 0
    assert flat.scaler_state(1)["scale"] == 2.0**17


def test_a_scale_of_exactly_half_the_maximum_still_grows_as_a_grad_scalers():
    flat = _flat("adam", scaled=True)
    solo = _Solo("adam", True, _member(flat, flat.params, 0), MemberStep(0, 1e-3, 0.0, 0.0, 0.0))
    state = {**solo.scaler.state_dict(), "scale": fused_update._MAX_GROWABLE,
             "_growth_tracker": 1999}
    solo.scaler.load_state_dict(state)
    flat.load_scaler(0, state)
    flat.prepare([MemberStep(0, 1e-3, 0.0, 0.0, 0.0)])
    for view, g in zip(flat.views(flat.grad, 0), solo.step([torch.full((s,), 1e-30) for s in SIZES]),
                       strict=True):
        view.copy_(g)
    flat.apply()
    assert flat.scaler_state(0) == solo.scaler.state_dict()
    assert flat.scaler_state(0)["scale"] == torch.finfo(torch.float32).max


@pytest.mark.parametrize("scaled", [False, True], ids=["fp32", "fp16-scaler"])
def test_reset_empties_one_slot_and_leaves_the_other(scaled):
    flat = _flat("adam", scaled)
    flat.params.normal_()
    for buf in flat.states:
        buf.uniform_(0.5, 1.0)
    for slot in range(N):
        flat.set_steps(slot, 7 + slot)
        flat.load_scaler(slot, {"scale": 8.0, "_growth_tracker": 5})
    kept = _snapshot(flat, 1)
    flat.reset(0)
    assert all(bool((v == 0).all()) for buf in (flat.params, *flat.states)
               for v in flat.views(buf, 0))
    assert flat.step_count(0) == 0 and flat.step_count(1) == 8
    assert all(torch.equal(a, b) for a, b in zip(kept, _snapshot(flat, 1), strict=True))
    if scaled:
        assert flat.scaler_state(0) == {**flat.scaler_state(1), "scale": fused_update.INIT_SCALE,
                                        "_growth_tracker": 0}
        assert flat.scaler_state(1)["scale"] == 8.0
    else:
        assert flat.scaler_state(0) == {}  # no scaler: a saved scale is not read either
