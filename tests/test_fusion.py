"""Fused trials in a search (tune.fusion): the engine's bookkeeping with a stand-in group, the
space rules, and a real fused search on Ray."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from trainable.config import TrainConfig
from trainable.errors import ConfigError
from trainable.result import ValidationResult
from tune import fusion

BASE = dict(data="unused", epochs=4, epoch_samples=64, batch_size=8, validation_interval=1,
            use_amp=False, patch_size=8)


class FakeGroup:
    """What the engine drives of a FusedTrainer: slots, one interval at a time."""

    def __init__(self, capacity: int, fail_at: int | None = None,
                 error: type[Exception] = RuntimeError) -> None:
        self.slots: dict[int, tuple[TrainConfig, int]] = {}
        self.capacity, self.intervals, self.fail_at, self.error = capacity, 0, fail_at, error
        self.trained: list[list[int]] = []  # the slots each interval trained

    def free_slots(self) -> list[int]:
        return [i for i in range(self.capacity) if i not in self.slots]

    def add(self, slot: int, cfg: TrainConfig, state: dict | None = None) -> None:
        assert slot not in self.slots
        self.slots[slot] = (cfg, int(state["samples_seen"]) // cfg.epoch_samples if state else 0)

    def remove(self, slot: int) -> None:
        del self.slots[slot]

    def run_interval(self) -> dict[int, Any]:
        self.intervals += 1
        if self.fail_at == self.intervals:
            raise self.error("CUDA out of memory. Tried to allocate 2.00 GiB"
                             if self.error is not RuntimeError else "boom")
        self.trained.append(sorted(self.slots))
        out = {}
        for slot, (cfg, epoch) in list(self.slots.items()):
            epoch += 1
            self.slots[slot] = (cfg, epoch)
            out[slot] = ValidationResult(
                epoch=epoch, samples=epoch * cfg.epoch_samples, max_epochs=cfg.epochs,
                psnr=20.0 + cfg.model_lr, ssim=0.5, bicubic_psnr=19.0, bicubic_ssim=0.5,
                gain_db=1.0, best_psnr=21.0, best_epoch=epoch, loss=0.1, lr=cfg.model_lr,
                samples_per_s=1.0, steps_per_s=1.0, data_time_share=0.0,
                status="completed" if epoch >= cfg.epochs else "running")
        return out

    def member_state(self, slot: int) -> dict:
        cfg, epoch = self.slots[slot]
        return {"samples_seen": epoch * cfg.epoch_samples}


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch):
    groups: list[FakeGroup] = []

    def new_trainer(self, cfg):
        groups.append(FakeGroup(self.capacity, getattr(self, "fail_at", None),
                                getattr(self, "error", RuntimeError)))
        return groups[-1]

    monkeypatch.setattr(fusion.FusionEngine, "_new_trainer", new_trainer)
    eng = fusion.FusionEngine(capacity=2, num_threads=1)
    eng.groups_made = groups
    return eng


def _cfg(lr: float, **over: Any) -> dict[str, Any]:
    return TrainConfig.from_dict({**BASE, "model_lr": lr, **over}).to_dict()


def _ask(eng, trial: str, after: int, timeout: float = 10.0) -> ValidationResult:
    return _ask_all(eng, {trial: after}, timeout)[trial]


def _ask_all(eng, asks: dict[str, int], timeout: float = 10.0) -> dict[str, ValidationResult]:
    """Every trial asks at once, as the trials of a search do."""
    out: dict[str, ValidationResult] = {}

    def call(trial: str, after: int) -> None:
        out[trial] = eng.next_result(trial, after)[0]

    threads = [threading.Thread(target=call, args=a, daemon=True) for a in asks.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    assert set(out) == set(asks), f"no result for {set(asks) - set(out)}"
    return out


def test_members_train_together_one_interval_at_a_time(engine) -> None:
    assert engine.join("a", _cfg(1e-3), None) and engine.join("b", _cfg(2e-3), None)
    first = _ask_all(engine, {"a": 0, "b": 0})
    assert first["a"].epoch == first["b"].epoch == 1
    # The next interval waits until both have asked for what follows their result.
    group = engine.groups_made[0]
    with pytest.raises(AssertionError, match="no result"):
        _ask(engine, "a", 1, timeout=0.5)
    assert group.intervals == 1
    assert _ask(engine, "b", 1).epoch == 2 and _ask(engine, "a", 1).epoch == 2
    assert group.trained[:2] == [[0, 1], [0, 1]]


def test_a_full_group_refuses_and_a_stopped_member_frees_its_slot(engine) -> None:
    engine.join("a", _cfg(1e-3), None)
    engine.join("b", _cfg(2e-3), None)
    assert not engine.join("c", _cfg(3e-3), None), "two slots, both taken"
    _ask_all(engine, {"a": 0, "b": 0})
    engine.leave("b")  # ASHA stopped it: the driver says so, the trial never asks again
    assert engine.join("c", _cfg(3e-3), None)
    got = _ask_all(engine, {"c": 0, "a": 1})
    assert got["c"].epoch == 1 and got["a"].epoch == 2  # c starts at its own epoch 0
    assert [sorted(m) for m in (s["members"] for s in engine.stats())] == [["a", "c"]]


def test_a_trial_of_another_shape_gets_a_group_of_its_own(engine) -> None:
    engine.join("a", _cfg(1e-3), None)
    engine.join("big", _cfg(1e-3, batch_size=16), None)
    assert len(engine.stats()) == 2
    got = _ask_all(engine, {"big": 0, "a": 0})
    assert got["big"].epoch == got["a"].epoch == 1


def test_a_resumed_member_continues_from_its_checkpoint(engine) -> None:
    import io

    import torch

    buf = io.BytesIO()
    torch.save({"samples_seen": 2 * 64}, buf)
    engine.join("r", _cfg(1e-3), buf.getvalue())
    assert _ask(engine, "r", 2).epoch == 3
    # From its checkpoint, not from scratch: one interval, not three, and epoch 3 comes first.
    assert engine.groups_made[0].intervals == 1
    assert engine.next_result("r", 0)[0].epoch == 3


def test_a_resumed_member_continues_bitwise_in_a_real_group(monkeypatch, tiny_train, tiny_val) -> None:
    """Through the engine, a trial resumed from its member checkpoint continues exactly as the
    uninterrupted member does (same slot, same capacity): the real FusedTrainer, no Ray."""
    import torch

    from trainable.fused import FusedTrainer

    def new_trainer(self, cfg):
        return FusedTrainer(cfg.replace(num_threads=1), tiny_train, tiny_val, self.capacity)

    monkeypatch.setattr(fusion.FusionEngine, "_new_trainer", new_trainer)
    cfg = TrainConfig.from_dict({**BASE, "model_lr": 3e-3, "epochs": 2, "device": "cpu",
                                 "num_threads": 1})
    # Its first epoch at another LR: a fresh start at the trial's own LR cannot end where the
    # resumed member does (the config given on joining wins over the checkpoint's, as in add).
    straight = FusedTrainer(cfg, tiny_train, tiny_val, 2)
    straight.add(0, cfg.replace(model_lr=3e-2))
    straight.run_interval()
    checkpoint = fusion._dump(straight.member_state(0))
    straight.remove(0)
    straight.add(0, cfg, fusion._load(checkpoint))
    straight.run_interval()
    engine = fusion.FusionEngine(capacity=2, num_threads=1)
    assert engine.join("r", cfg.to_dict(), checkpoint)
    result, state = engine.next_result("r", 1)
    assert result.epoch == 2 and result.status == "completed"
    assert engine.next_result("r", 0)[0].epoch == 2  # its first result: no epoch 1 again
    resumed, want = fusion._load(state), straight.member_state(0)
    assert all(torch.equal(resumed["model"][k], w) for k, w in want["model"].items())
    assert resumed["samples_seen"] == want["samples_seen"] == 128
    assert [h["psnr"] for h in resumed["history"]] == [h["psnr"] for h in want["history"]]


def test_a_retried_trial_takes_the_place_of_its_old_member(engine) -> None:
    """Ray retries a failed trial under the same id while its old member may still be listed:
    the old one leaves, so the retry does not hold two of the group's slots."""
    assert engine.join("a", _cfg(0.01), None)
    assert engine.join("a", _cfg(0.01), None)
    assert engine.join("b", _cfg(0.02), None)  # two slots: the retry and b
    assert not engine.join("c", _cfg(0.03), None)
    assert _ask_all(engine, {"a": 0, "b": 0})["a"].epoch == 1


def test_groups_of_two_shapes_take_turns(engine) -> None:
    """Two groups that are both ready at every choice (their trials ask at once) train in turn:
    neither waits while the other runs to its end."""
    order: list[int] = []
    with engine.cond:  # the engine's thread waits until both are set up
        assert engine.join("a", _cfg(0.01, epochs=6), None)
        assert engine.join("b", _cfg(0.01, epochs=6, batch_size=4), None)
        for i, group in enumerate(engine.groups_made):
            def run(i=i, run=group.run_interval):
                order.append(i)
                return run()
            group.run_interval = run
        for trial in ("a", "b"):
            engine.trials[trial][1].wants = 10**6  # has asked for every result to come
    _until(lambda: len(order) == 12, "the groups did not train to their ends")
    assert order[:6] in ([0, 1] * 3, [1, 0] * 3)


def test_a_member_that_stops_asking_is_dropped_after_its_lease(engine, monkeypatch) -> None:
    monkeypatch.setattr(fusion, "LEASE_S", 0.2)
    engine.join("a", _cfg(1e-3), None)
    engine.join("gone", _cfg(2e-3), None)
    _ask_all(engine, {"a": 0, "gone": 0})
    assert _ask(engine, "a", 1).epoch == 2  # without the lease it would wait for "gone"


def test_a_failed_step_errors_every_member_and_a_retry_starts_a_new_group(engine) -> None:
    engine.fail_at = 1
    engine.join("a", _cfg(1e-3), None)
    with pytest.raises(RuntimeError, match="fused group failed: RuntimeError: boom"):
        engine.next_result("a", 0)
    time.sleep(1.5)  # longer than the engine's idle wait: a failed group is never run again
    assert engine.groups_made[0].intervals == 1
    engine.fail_at = None
    assert engine.join("a", _cfg(1e-3), None)  # Ray's retry
    assert _ask(engine, "a", 0).epoch == 1 and len(engine.groups_made) == 2


def test_a_group_out_of_memory_ends_every_member_infeasible_and_the_next_starts_anew(
        engine) -> None:
    """Issue 27, item 9: as a solo trial that runs out of memory, not an error that Ray retries
    into a group of the same shape. A forced allocation failure at the group's second interval."""
    import torch

    engine.fail_at, engine.error = 2, torch.OutOfMemoryError
    engine.join("a", _cfg(1e-3), None)
    engine.join("b", _cfg(2e-3), None)
    assert {t: r.epoch for t, r in _ask_all(engine, {"a": 0, "b": 0}).items()} == {"a": 1, "b": 1}
    got = {}
    threads = [threading.Thread(target=lambda t=t: got.update({t: engine.next_result(t, 1)}))
               for t in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert got == {t: fusion.Infeasible("out of memory in a fused group of 2: CUDA out of memory."
                                        " Tried to allocate 2.00 GiB") for t in ("a", "b")}
    engine.fail_at = None
    assert engine.join("c", _cfg(3e-3), None)  # the next trial of this shape: a new group
    assert _ask(engine, "c", 0).epoch == 1 and len(engine.groups_made) == 2


def test_an_out_of_memory_without_a_message_ends_the_members_infeasible_all_the_same(
        engine) -> None:
    engine.fail_at, engine.error = 1, lambda _: torch.OutOfMemoryError(" ")
    engine.join("a", _cfg(1e-3), None)
    got = []
    asking = threading.Thread(target=lambda: got.append(engine.next_result("a", 0)), daemon=True)
    asking.start()
    asking.join(10)  # an engine thread that died on the message would leave it waiting
    assert got == [fusion.Infeasible("out of memory in a fused group of 1: no message")]


def test_a_completed_member_gets_its_last_result_and_its_slot_is_freed(engine) -> None:
    engine.join("a", _cfg(1e-3, epochs=1), None)
    assert _ask(engine, "a", 0).status == "completed"
    time.sleep(1.5)  # longer than the engine's idle wait: a group with no one to train idles
    assert engine.groups_made[0].intervals == 1
    assert engine.join("b", _cfg(2e-3), None) and engine.join("c", _cfg(3e-3), None)
    got = _ask_all(engine, {"b": 0, "c": 0})
    assert got["b"].epoch == got["c"].epoch == 1


# --- the space rules -----------------------------------------------------------------------------
def _space(tmp_path: Path, extra: str) -> Path:
    path = tmp_path / "fuse.yaml"
    path.write_text("params:\n  model_lr: {loguniform: [1.0e-3, 5.0e-2]}\n"
                    "config: {batch_size: 8, use_amp: false}\ntrials: 6\n" + extra)
    return path


@pytest.mark.parametrize("extra, match", [
    ("resources: {fuse: 8}\n", r"`resources.fuse` is 8, but must be <= `trials` \(6\)"),
    ("resources: {fuse: 2}\nscheduler: {type: pbt}\nsearch: {algorithm: random}\n",
     r"`resources.fuse` is 2, but cannot be used with `scheduler.type` pbt"),
    ("resources: {fuse: 2}\nscheduler: {type: hyperband}\n", r"cannot be used with "
                                                             r"`scheduler.type` hyperband"),
    ("resources: {fuse: 2, gpus: 0.5}\n", r"`resources.gpus` is 0.5, but must be 0 or 1"),
    ("resources: {fuse: 0}\n", r"`resources.fuse` is 0, but must be >= 1"),
])
def test_bad_fusion_is_refused_before_anything_starts(tmp_path: Path, extra: str, match: str) -> None:
    from tune.space import load_space

    with pytest.raises(ConfigError, match=match):
        load_space(_space(tmp_path, extra))


def test_fuse_on_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tune.run import main

    assert main(["--space", str(_space(tmp_path, "")), "--fuse", "3", "--dry-run"]) == 0
    assert "Fusion:       up to 3 trials of one shape" in capsys.readouterr().out
    assert main(["--space", str(_space(tmp_path, "")), "--fuse", "7", "--dry-run"]) == 2
    assert "must be <= `trials` (6)" in capsys.readouterr().err


# --- a real fused search ---------------------------------------------------------------------------
@pytest.mark.slow
def test_a_fused_search_is_one_trial_per_configuration_to_ray(ray_session, clip_root, tmp_path):
    from analysis.tables import load_run
    from trainable.weights import checkpoint_weights
    from tune.run import main

    space = tmp_path / "fused.yaml"
    space.write_text(
        "params:\n  model_lr: {loguniform: [1.0e-3, 5.0e-2]}\n"
        "  lr_scheduler_milestones: {milestones: {count: [1, 2]}}\n"
        "config: {batch_size: 8, use_amp: false}\n"
        "budget: {epochs: 3, epoch_samples: 256, validation_interval: 1}\n"
        "scheduler: {grace_period: 1, reduction_factor: 2}\n"
        "search: {n_startup_trials: 3}\ntrials: 6\nresources: {cpus: 1, fuse: 3}\n")
    rc = main(["--space", str(space), "--storage", str(tmp_path), "--name", "fused",
               "--data", str(clip_root)])
    assert rc == 0
    run = load_run(tmp_path / "fused")
    trials = run.trials[~run.trials["is_reference"].astype(bool)]
    assert len(trials) == 6 and not trials["error"].any()
    assert (trials["outcome"].str.startswith("stopped by ASHA")).any()
    assert (trials["outcome"] == "completed").any()
    spans = []
    for d in trials["dir"]:
        placement = [json.loads(x) for x in (tmp_path / "fused" / d / "placement.jsonl")
                     .read_text().splitlines()]
        assert placement[-1]["fused"] and placement[-1]["engine"] == "fusion-fused-0"
        spans.append((placement[0]["started"], placement[-1]["finished"]))
        for ckpt in (tmp_path / "fused" / d).glob("checkpoint_*"):
            checkpoint_weights(ckpt / "trainer.pt", 3, 4, False)  # a solo Trainer's format
    # Trials of the group ran at the same time (one engine, three slots).
    overlaps = sum(1 for a in spans for b in spans if a < b and b[0] < a[1])
    assert overlaps >= 2
    # One patch stream: a solo run of a fused trial's own trial_config.json, as a user would
    # start it, trains on the trial's patches, and on the CPU the group steps each member with
    # a solo network's operators: every validation is the trial's, to the last digit. (With
    # grouped convolutions this differed by 3e-6 dB at epoch 1; with the two patch streams
    # before, by 0.012 dB, 0.48 dB at epoch 1 of the smoke search.)
    from analysis import run_folder
    from trainable.__main__ import main as train

    done = trials[trials["outcome"] == "completed"].iloc[0]
    folder = tmp_path / "fused" / done["dir"]
    threads = torch.get_num_threads()
    try:
        assert train(["--config", str(folder / "trial_config.json"), "--out",
                      str(tmp_path / "solo"), "--no-test", "-q"]) == 0
    finally:
        torch.set_num_threads(threads)
    solo = torch.load(tmp_path / "solo" / "checkpoint.pt", weights_only=True)["history"]
    fused = run_folder.read_results(folder)
    assert len(fused) == 3
    assert [h["psnr"] for h in solo] == [r.psnr for r in fused]
    assert [h["loss"] for h in solo] == [r.loss for r in fused]
    # The search's end ends its engine: the session's Ray gets its CPU back (a later search in
    # this session once waited for it: its half-GPU trials ran two at a time, not four).
    _until(lambda: _engines_gone(["fusion-fused-0"]), "the engine outlived its search", 30)


@pytest.mark.slow
def test_a_fused_group_out_of_memory_ends_its_trials_as_a_solo_trial_does(
        ray_session, clip_root, tmp_path, monkeypatch):
    """Issue 27, item 9, on real Ray: the engine's real group hits a forced allocation failure
    (torch.OutOfMemoryError, as CUDA raises it) at its second interval. Every member reports what
    a solo trial that runs out of memory reports (`ResultRow.infeasible`): the trials end
    `infeasible` with the reason, none errors and none is retried."""
    import torch

    from analysis.result_row import INFEASIBLE
    from analysis.tables import load_run
    from tune.run import main

    class OutOfMemoryEngine(fusion.FusionEngine):  # defined here: Ray ships it by value
        def _new_trainer(self, cfg):
            trainer = super()._new_trainer(cfg)
            run_interval, calls = trainer.run_interval, []

            def fails_at_the_second() -> dict:
                calls.append(1)
                if len(calls) == 2:
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB "
                                                 "(forced by the test)")
                return run_interval()

            trainer.run_interval = fails_at_the_second
            return trainer

    monkeypatch.setattr(fusion, "FusionEngine", OutOfMemoryEngine)
    space = tmp_path / "fused.yaml"
    space.write_text(
        "params:\n  model_lr: {loguniform: [1.0e-3, 5.0e-2]}\n"
        "config: {batch_size: 8, use_amp: false}\n"
        "budget: {epochs: 3, epoch_samples: 128, validation_interval: 1}\n"
        "scheduler: {type: fifo}\nsearch: {algorithm: random}\ntrials: 2\n"
        "include_defaults: false\nresources: {cpus: 1, fuse: 2}\n")
    rc = main(["--space", str(space), "--storage", str(tmp_path), "--name", "oom",
               "--data", str(clip_root)])
    assert rc == 1  # no trial could train: a failed run, as with solo trials
    run = load_run(tmp_path / "oom")
    assert len(run.trials) == 2
    for t in run.trials.itertuples():
        assert t.outcome == INFEASIBLE and not t.error, t
        assert t.reason.startswith("out of memory in a fused group of ")
        assert t.reason.endswith(": CUDA out of memory. Tried to allocate 9.00 GiB (forced by "
                                 "the test)")
        assert t.epochs_trained <= 1  # its validation, if any, before the group failed
        assert not (tmp_path / "oom" / t.dir / "error.txt").exists()  # never retried


def test_an_unknown_trial_or_a_bad_config_is_named(engine) -> None:
    with pytest.raises(RuntimeError, match="^trial nobody is in no fused group of this engine$"):
        engine.next_result("nobody", 0)
    with pytest.raises(ConfigError, match="trial t9's config"):
        engine.join("t9", {**_cfg(0.01), "batch_size": "many"}, None)


def test_a_member_checkpoint_is_read_as_tensors_only() -> None:
    import datetime
    import pickle

    assert fusion._load(fusion._dump({"w": torch.ones(2)}))["w"].tolist() == [1.0, 1.0]
    with pytest.raises(pickle.UnpicklingError):  # no pickle beyond weights_only
        fusion._load(fusion._dump({"when": datetime.date(2026, 12, 7)}))


# --- the trial's side and the driver's, against real engine actors on the session's Ray ---------
# Fast (seconds): each trains a real fused group of two-epoch trials on the six small clips. The
# slow searches above run the same functions inside Ray Tune; these call them from the test
# itself, so that a wrong engine count, resource share, join order, resume epoch or report is
# seen in the fast suite (and mutation testing, which learns which test reaches which function
# in the test's own process, can score them).
def _member_spec(tmp_path: Path, clip_root: Path, **replace: Any):
    import dataclasses

    from tune.space import load_space, with_overrides

    path = tmp_path / "member.yaml"
    path.write_text("params:\n  model_lr: {loguniform: [1.0e-3, 5.0e-2]}\n"
                    "config: {batch_size: 8, use_amp: false, patch_size: 8}\n"
                    "budget: {epochs: 2, epoch_samples: 64, validation_interval: 1}\n"
                    "trials: 4\nresources: {cpus: 1, fuse: 2}\n")
    return dataclasses.replace(with_overrides(load_space(path), data=str(clip_root)), **replace)


def _facts(name: str) -> dict[str, Any]:
    """What an engine actor was started with and holds, read in the actor (`__ray_call__`)."""
    import ray

    def facts(engine) -> dict[str, Any]:  # nested: Ray ships it by value to the actor
        import ray

        return {"capacity": engine.capacity, "num_threads": engine.num_threads,
                "resources": ray.get_runtime_context().get_assigned_resources(),
                "threads": sorted({g.trainer.shape.num_threads for g in engine.groups.values()})}

    return ray.get(fusion._engine(name).__ray_call__.remote(facts))


def _members(name: str) -> set[str]:
    import ray

    return {t for g in ray.get(fusion._engine(name).stats.remote()) for t in g["members"]}


def _until(check, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _engines_gone(names: list[str]) -> bool:
    import ray

    live = {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["namespace"] == fusion.NAMESPACE}
    return not live & set(names)


@pytest.mark.parametrize("gpus, include_defaults, inside, in_cluster, cpus, count, share", [
    (0.0, True, False, 2.0, 1.0, 1, None),  # on the CPU: one engine, whatever the cluster's GPUs
    (1.0, True, False, 2.0, 1.0, 2, 0.9),  # one per card; the reference run beside takes 0.1
    (1.0, True, True, 2.0, 0.5, 2, 1.0),  # the reference is a trial: whole cards
    (1.0, False, False, 0.5, 1.0, 1, 1.0),  # no reference; half a card in the cluster: one
])
def test_engines_start_one_per_card_and_end_with_the_search(
        ray_session, clip_root, tmp_path, gpus, include_defaults, inside, in_cluster, cpus,
        count, share) -> None:
    spec = _member_spec(tmp_path, clip_root, gpus_per_trial=gpus, cpus_per_trial=cpus,
                        include_defaults=include_defaults, reference_inside=inside)
    names = fusion.start_engines(spec, "starts", in_cluster)
    try:
        assert names == [f"fusion-starts-{i}" for i in range(count)]
        for name in names:
            facts = _facts(name)
            assert facts["capacity"] == 2 and facts["num_threads"] == 1  # fuse; max(1, cpus)
            want = {"CPU": cpus, **({"GPU": share} if share else {})}
            assert facts["resources"] == pytest.approx(want)
    finally:
        fusion.stop_engines()
    assert fusion._ENGINES == []
    _until(lambda: _engines_gone(names), "an engine outlived stop_engines")


def test_a_trial_joins_the_first_engine_with_room_and_waits_for_one(
        ray_session, clip_root, tmp_path, monkeypatch) -> None:
    """Two engines of one slot each (a card each, 0.5 CPU): the trials fill them in order; a
    third waits, and is refused with its id once three leases have passed; the driver's word
    (`FusionCallback`, on a trial's end or error) frees a slot for the next."""
    from types import SimpleNamespace

    spec = _member_spec(tmp_path, clip_root, gpus_per_trial=1.0, cpus_per_trial=0.5, fuse=1,
                        include_defaults=False)
    cfg = spec.trial_config({"model_lr": 1e-3})
    names = fusion.start_engines(spec, "joins", 2.0)
    callback = fusion.FusionCallback(names)
    try:
        assert fusion._join(names, "a", cfg, None) == names[0]
        assert fusion._join(names, "b", cfg, None) == names[1]
        assert _members(names[0]) == {"a"} and _members(names[1]) == {"b"}
        # It asks every engine once a second, and gives up after three leases: on a clock
        # that moves only while it sleeps (the engines are asked for real).
        clock = SimpleNamespace(now=0.0, slept=[])

        def sleep(seconds: float) -> None:
            clock.slept.append(seconds)
            clock.now += seconds

        monkeypatch.setattr(fusion, "time", SimpleNamespace(monotonic=lambda: clock.now,
                                                            sleep=sleep))
        monkeypatch.setattr(fusion, "LEASE_S", 2.0)
        with pytest.raises(RuntimeError, match=r"^no fused group had room for trial c in 6 s$"):
            fusion._join(names, "c", cfg, None)
        assert clock.slept == [1.0] * 7  # asked at 0, 1, ..., 7 s; past 6 s it gives up
        monkeypatch.undo()
        callback.on_trial_complete(0, [], SimpleNamespace(trial_id="a"))
        assert fusion._join(names, "c", cfg, None) == names[0]
        callback.on_trial_error(0, [], SimpleNamespace(trial_id="b"))
        assert fusion._join(names, "d", cfg, None) == names[1]
        _until(lambda: _members(names[0]) == {"c"} and _members(names[1]) == {"d"},
               "a trial that ended kept its slot")
        assert _facts(names[0])["threads"] == [1]  # the engine's (`_new_trainer`)
    finally:
        fusion.stop_engines()
    callback.on_trial_complete(0, [], SimpleNamespace(trial_id="c"))  # engines gone: no error


def test_an_engine_answers_its_members_at_once(ray_session, clip_root, tmp_path) -> None:
    """Each member's ``next_result`` waits in the engine until its whole group has asked: the
    actor must take the other members' calls meanwhile (its ``max_concurrency``), or the
    group never trains on."""
    import ray

    spec = _member_spec(tmp_path, clip_root)
    names = fusion.start_engines(spec, "asks", 0.0)
    try:
        cfg = spec.trial_config({"model_lr": 1e-3})
        for trial in ("x", "y"):
            assert fusion._join(names, trial, cfg, None) == names[0]
        handle = fusion._engine(names[0])
        epochs: dict[str, list[int]] = {"x": [], "y": []}

        def trial(name: str) -> None:  # as run_member asks: each result, then the next
            while not epochs[name] or epochs[name][-1] < 2:
                after = epochs[name][-1] if epochs[name] else 0
                result, _ = ray.get(handle.next_result.remote(name, after), timeout=60)
                epochs[name].append(result.epoch)

        trials = [threading.Thread(target=trial, args=(t,), daemon=True) for t in epochs]
        for t in trials:
            t.start()
        for t in trials:
            t.join(150)
        assert epochs == {"x": [1, 2], "y": [1, 2]}
    finally:
        fusion.stop_engines()


class _TrialSession:
    """What `run_member` reads of Ray Tune's trial session (its id and folder, the checkpoint it
    resumes from) and what it reports, for a call from the test itself; each report's checkpoint
    folder is copied, as Tune does, before it is deleted."""

    def __init__(self, trial_id: str, root: Path, checkpoint: Path | None = None) -> None:
        self.trial_id, self.root, self.checkpoint = trial_id, root, checkpoint
        self.reports: list[tuple[dict[str, Any], Path | None]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from ray import tune

        monkeypatch.setattr(tune, "get_context", lambda: self)
        monkeypatch.setattr(tune, "report", self.report)
        monkeypatch.setattr(tune, "get_checkpoint", lambda: (
            tune.Checkpoint.from_directory(self.checkpoint) if self.checkpoint else None))

    def get_trial_id(self) -> str:
        return self.trial_id

    def get_trial_dir(self) -> str:
        return str(self.root / "staging" / self.trial_id)

    def report(self, metrics: dict[str, Any], checkpoint: Any = None) -> None:
        import shutil

        kept = None
        if checkpoint is not None:
            kept = self.root / "kept" / f"{self.trial_id}-{len(self.reports)}"
            shutil.copytree(checkpoint.path, kept)
        self.reports.append((metrics, kept))


def test_a_member_reports_each_validation_with_a_solo_checkpoint_and_resumes_from_one(
        ray_session, clip_root, tmp_path, monkeypatch) -> None:
    import shutil

    from analysis import run_folder
    from trainable.weights import checkpoint_weights

    spec = _member_spec(tmp_path, clip_root)
    names = fusion.start_engines(spec, "member", 0.0)
    run_dir = tmp_path / "run"
    try:
        first = _TrialSession("t1", tmp_path)
        first.install(monkeypatch)
        trial = threading.Thread(target=fusion.run_member, args=({"model_lr": 1e-3},),
                                 kwargs=dict(spec=spec, engines=names, run_dir=str(run_dir)))
        trial.start()
        _until(lambda: _members(names[0]) == {"t1"}, "the engine never knew the trial by its id")
        trial.join(60)
        rows = [m for m, _ in first.reports]
        assert [(r["epoch"], r["status"]) for r in rows] == [(1, "running"), (2, "completed")]
        for metrics, kept in first.reports:  # a solo Trainer's checkpoint, at its epoch
            state = torch.load(kept / run_folder.CHECKPOINT_STATE, weights_only=True)
            assert state["samples_seen"] == metrics["epoch"] * 64
            checkpoint_weights(kept / run_folder.CHECKPOINT_STATE, 3, 4, False)
            assert json.loads((kept / run_folder.CHECKPOINT_META).read_text())["epoch"] == \
                metrics["epoch"]
        folder = run_dir / "t1"  # the run folder's, not Ray's staging folder
        written = json.loads((folder / "trial_config.json").read_text())
        assert written["num_threads"] == 1 and written["model_lr"] == 1e-3
        _until(lambda: "t1" not in _members(names[0]), "a finished member kept its slot")

        # Resumed from its epoch-1 checkpoint (a retry, or a restored run; here with another
        # LR, so that a fresh start would not give the same figures): it trains epoch 2 only,
        # exactly as a solo Trainer that loads the checkpoint, and its attempt says where it
        # started.
        given = shutil.copytree(first.reports[0][1], tmp_path / "given")
        shutil.rmtree(tmp_path / "kept")
        second = _TrialSession("t1", tmp_path, given)
        second.install(monkeypatch)
        fusion.run_member({"model_lr": 2e-3}, spec=spec, engines=names, run_dir=str(run_dir))
        ((resumed, _),) = second.reports
        assert resumed["epoch"] == 2 and resumed["psnr"] != rows[1]["psnr"]
        from trainable.loop import Trainer
        from trainable.store import open_split

        cfg = spec.trial_config({"model_lr": 2e-3}).replace(num_threads=1)
        threads = torch.get_num_threads()
        try:
            solo = Trainer(cfg, open_split(cfg.data_spec, "train"), open_split(cfg.data_spec, "val"))
            solo.load(given / run_folder.CHECKPOINT_STATE)
            alone = solo.run_interval()
        finally:
            torch.set_num_threads(threads)
        assert (resumed["psnr"], resumed["loss"]) == (alone.psnr, alone.loss)
        attempts = [json.loads(x) for x in (folder / "placement.jsonl").read_text().splitlines()]
        assert [a.get("resumed_from_epoch") for a in attempts] == [None, 1]
        assert isinstance(attempts[1]["resumed_from_epoch"], int)  # an epoch, not 1.0
        assert all(a["fused"] and a["engine"] == names[0] and "finished" in a
                   and "error" not in a for a in attempts)
        _until(lambda: not _members(names[0]), "a finished member kept its slot")
    finally:
        fusion.stop_engines()


def test_a_member_whose_group_runs_out_of_memory_reports_infeasible_once(
        ray_session, clip_root, tmp_path, monkeypatch) -> None:
    import ray

    from analysis.result_row import INFEASIBLE

    def out_of_memory(engine) -> None:  # in the engine: its next group fails at once
        real = type(engine)._new_trainer

        def new_trainer(self, cfg):
            trainer = real(self, cfg)

            def run_interval():
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 9.00 GiB")

            trainer.run_interval = run_interval
            return trainer

        type(engine)._new_trainer = new_trainer

    spec = _member_spec(tmp_path, clip_root)
    names = fusion.start_engines(spec, "oom", 0.0)
    try:
        ray.get(fusion._engine(names[0]).__ray_call__.remote(out_of_memory))
        session = _TrialSession("t2", tmp_path)
        session.install(monkeypatch)
        fusion.run_member({"model_lr": 1e-3}, spec=spec, engines=names, run_dir=str(tmp_path))
        ((row, kept),) = session.reports
        assert row["status"] == INFEASIBLE and kept is None
        assert row["reason"] == ("out of memory in a fused group of 1: CUDA out of memory. "
                                 "Tried to allocate 9.00 GiB")
        _until(lambda: not _members(names[0]), "an infeasible member kept its place")
    finally:
        fusion.stop_engines()


def test_an_engine_built_in_this_process_trains_with_its_own_threads(clip_root, tmp_path) -> None:
    """`FusionEngine._new_trainer` itself (the actor tests run it in the engine's process): the
    group gets the engine's capacity and threads, and the trial's data."""
    spec = _member_spec(tmp_path, clip_root)
    threads = torch.get_num_threads()
    engine = fusion.FusionEngine(capacity=3, num_threads=1)
    try:
        assert engine.join("a", spec.trial_config({"model_lr": 1e-3}).replace(
            num_threads=2).to_dict(), None)
        (group,) = engine.groups.values()
        assert group.trainer.capacity == 3 and group.trainer.shape.num_threads == 1
        assert (group.trainer.train_data.split, group.trainer.val_data.split) == ("train", "val")
    finally:
        engine.leave("a")
        torch.set_num_threads(threads)
