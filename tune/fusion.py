"""Fused trials inside a search: one engine per card trains every trial that joins it as a member
of a fused group (`trainable.fused.FusedTrainer`); each Tune trial is a thin client of it.

On a GPU one trial of this network is bound by launching kernels, not by the card: fusing N
trials into one network makes each launch serve N of them. Ray Tune's logic is left as it is:
ASHA, TPE, the reference run, checkpoints, retries, resume after kill -9, ``result.json`` and the
run folder all still see one trial per configuration.

- **The engine** (`FusionEngine`, a Ray actor holding a whole card, or the trial's CPUs on a
  machine without one) keeps one group per trial *shape* (`FusedTrainer.shape_key`: batch size,
  accumulation, patch, precision, optimizer type, residual, ...), ``fuse`` slots each. Its own
  thread trains a group one validation interval at a time, once every member has asked for its
  next result, so a member ASHA stops never costs the group more than the interval it was in.
- **A trial** (`run_member`) joins an engine with its configuration (and the checkpoint it
  resumes from, if any), then asks for its results one validation at a time and hands each to
  ``tune.report`` with a checkpoint in the solo Trainer's format, exactly as a solo trial does
  (`tune.trial`): export, retraining and resume read it the same way.
- **Leaving.** A trial that ends leaves its group; one that ASHA stops never runs again, so the
  driver tells the engines (`FusionCallback`, on Tune's trial-complete and trial-error events),
  and a member that has not asked for its next result within ``LEASE_S`` is dropped anyway. The
  freed slot takes the next trial of that shape, which starts fresh at its own epoch 0 (each
  member keeps its own progress, LR schedule, optimizer state and patch stream).
- **Resources.** Ray accounts the engines' resources (a whole GPU each, or ``cpus`` per
  engine on the CPU); a trial asks for a token CPU share only (``CLIENT_CPUS``), so Ray never
  limits how many run: the engines' slots do (the searcher's concurrency cap is ``fuse`` times
  the number of engines). The reference run beside the search keeps one trial's resources.

A failure inside a group's step ends every member of it with that error: each trial errors,
and Ray's retry (``max_failures``) brings it back from its last checkpoint into a new group. A
group that runs out of memory ends as a solo trial that does: every member reports
``infeasible`` with the reason (`tune.trial.report_infeasible`), is not retried, and the next
trials of that shape start a new group.
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune
from ray.tune import Callback
from ray.tune.experiment import Trial

from analysis import run_folder
from trainable.config import TrainConfig
from trainable.result import ValidationResult
from tune._spec_types import SearchSpec
from tune.ray_edge import trials as ray_trials

log = logging.getLogger("tune")

CLIENT_CPUS = 0.01  # what a fused trial asks Ray for: its engine holds the real resources
LEASE_S = 120.0  # a member that has not asked for its next result this long after one is dropped
NAMESPACE = "espcn-tune"


def engine_name(run_name: str, index: int) -> str:
    return f"fusion-{run_name}-{index}"


# --- the engine ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Infeasible:
    """What `FusionEngine.next_result` hands a member whose group ran out of memory."""

    reason: str


@dataclass
class _Member:
    trial_id: str
    cfg: TrainConfig
    state: dict[str, Any] | None  # the checkpoint it starts from, until it is admitted
    slot: int | None = None
    results: list[tuple[ValidationResult, bytes]] = field(default_factory=list)
    wants: int = -1  # the epoch after which it asked for its next result
    asked_at: float = field(default_factory=time.monotonic)
    error: str | None = None
    infeasible: str | None = None  # why its group could not train (out of memory)
    leaving: bool = False

    @property
    def final(self) -> bool:
        """Its last result ended it (completed, diverged, stopped early)."""
        return bool(self.results) and self.results[-1][0].status != "running"

    @property
    def asked(self) -> bool:
        """It asked for what comes after its last result (a new member: nothing yet to ask)."""
        return not self.results or self.wants >= self.results[-1][0].epoch

    @property
    def live(self) -> bool:
        return not self.leaving and not self.final


class _Group:
    def __init__(self, trainer: Any) -> None:
        self.trainer = trainer
        self.members: list[_Member] = []
        self.failed = False

    def ready(self) -> bool:
        """An interval can start: every admitted member still training has asked for its next
        result, and there is someone to train."""
        if self.failed:
            return False
        admitted = [m for m in self.members if m.slot is not None and m.live]
        waiting = [m for m in self.members if m.slot is None and m.live]
        if not admitted and not (waiting and self.trainer.free_slots()):
            return False
        return all(m.asked for m in admitted)


class FusionEngine:
    """A Ray actor (see the module): fused groups of trials, one per shape, trained in turn by
    one thread; the calls of trials and of the driver only change the bookkeeping, under a
    lock, and never touch a group's trainer (which is not thread-safe)."""

    def __init__(self, capacity: int, num_threads: int) -> None:
        self.capacity, self.num_threads = capacity, num_threads
        self.groups: dict[tuple[Any, ...], _Group] = {}
        self.trials: dict[str, tuple[_Group, _Member]] = {}  # trial id -> where it is now
        self.cond = threading.Condition()
        threading.Thread(target=self._loop, name="fusion-engine", daemon=True).start()

    # --- what trials and the driver call ---------------------------------------------------
    def join(self, trial_id: str, config: dict[str, Any], state: bytes | None) -> bool:
        """Take the trial into the group of its shape (from ``state``, a checkpoint, if given);
        False when that group has no room left, so that the trial tries another engine."""
        from trainable.fused import FusedTrainer

        cfg = TrainConfig.from_dict(config, where=f"trial {trial_id}'s config")
        key = FusedTrainer.shape_key(cfg)
        with self.cond:
            if trial_id in self.trials:  # a retry of a trial still listed: the old one leaves
                self.trials.pop(trial_id)[1].leaving = True
            group = self.groups.get(key)
            if group is None or group.failed:
                group = self.groups[key] = _Group(self._new_trainer(cfg))
            if sum(m.live for m in group.members) >= self.capacity:
                return False
            member = _Member(trial_id, cfg, None if state is None else _load(state))
            group.members.append(member)
            self.trials[trial_id] = (group, member)
            self.cond.notify_all()
            return True

    def next_result(self, trial_id: str, after_epoch: int
                    ) -> tuple[ValidationResult, bytes] | Infeasible:
        """The trial's first validation after ``after_epoch`` and its checkpoint, waiting for
        them (`Infeasible` where its group ran out of memory); asking is also what lets its
        group train on."""
        with self.cond:
            if trial_id not in self.trials:
                raise RuntimeError(f"trial {trial_id} is in no fused group of this engine")
            _, member = self.trials[trial_id]
            member.wants, member.asked_at = after_epoch, time.monotonic()
            self.cond.notify_all()
            while True:
                if member.infeasible:
                    return Infeasible(member.infeasible)
                if member.error:
                    raise RuntimeError(member.error)
                fresh = [r for r in member.results if r[0].epoch > after_epoch]
                if fresh:
                    return fresh[0]
                if member.leaving:
                    raise RuntimeError(f"trial {trial_id} left its fused group")
                self.cond.wait(timeout=5.0)

    def leave(self, trial_id: str) -> None:
        """The trial has ended, or ASHA stopped it: its slot frees before the next interval."""
        with self.cond:
            if trial_id in self.trials:
                self.trials.pop(trial_id)[1].leaving = True
                self.cond.notify_all()

    def stats(self) -> list[dict[str, Any]]:
        """Each group: its members' trial ids and slots (for tests and benchmarks)."""
        with self.cond:
            return [{"shape": dict(k), "members": {m.trial_id: m.slot for m in g.members}}
                    for k, g in self.groups.items()]

    # --- the training thread -----------------------------------------------------------------
    def _loop(self) -> None:
        turn = 0
        while True:
            with self.cond:
                self._expire()
                for group in self.groups.values():
                    self._tidy(group)
                ready = [g for g in self.groups.values() if g.ready()]
                if not ready:
                    self.cond.wait(timeout=1.0)
                    continue
                group = ready[turn % len(ready)]
                turn += 1
                self._admit(group)
                by_slot = {m.slot: m for m in group.members if m.slot is not None}
            error = oom = None
            try:
                results = group.trainer.run_interval()
                states = {slot: _dump(group.trainer.member_state(slot)) for slot in results}
            except torch.OutOfMemoryError as e:  # as a solo trial's: every member infeasible
                results, states = {}, {}
                oom = (f"out of memory in a fused group of {len(by_slot)}: "
                       f"{str(e).strip().splitlines()[0] if str(e).strip() else 'no message'}")
                log.warning("a fused group ran out of memory; its members end as infeasible (%s)",
                            oom)
            except Exception as e:  # noqa: BLE001 - handed to every member's trial, which errors
                log.exception("a fused group's step failed")
                results, states, error = {}, {}, f"fused group failed: {type(e).__name__}: {e}"
            with self.cond:
                if error or oom:
                    group.failed = True
                    for m in group.members:
                        m.error, m.infeasible = error, oom
                for slot, result in results.items():
                    by_slot[slot].results.append((result, states[slot]))
                self.cond.notify_all()

    def _tidy(self, group: _Group) -> None:
        """Free the slots of members that left or ended (their last result is kept for their
        trial to fetch), and forget those that left."""
        if group.failed:
            group.members = [m for m in group.members if not m.leaving]
            return
        for m in group.members:
            if m.slot is not None and not m.live:
                group.trainer.remove(m.slot)
                m.slot = None
        group.members = [m for m in group.members if not m.leaving]

    def _admit(self, group: _Group) -> None:
        for m in group.members:
            free = group.trainer.free_slots()
            if m.slot is None and m.live and free:
                group.trainer.add(free[0], m.cfg, m.state)
                m.slot, m.state = free[0], None

    def _expire(self) -> None:
        """Members whose trial stopped asking (ASHA stopped it, and the driver's word was lost)."""
        now = time.monotonic()
        for group in self.groups.values():
            for m in group.members:
                if not m.leaving and not m.asked and now - m.asked_at > LEASE_S:
                    log.warning("trial %s asked for no result in %.0f s: it leaves its group",
                                m.trial_id, LEASE_S)
                    m.leaving = True

    def _new_trainer(self, cfg: TrainConfig) -> Any:
        from trainable.fused import FusedTrainer
        from trainable.store import open_split

        shape = cfg.replace(num_threads=self.num_threads)
        return FusedTrainer(shape, open_split(cfg.data_spec, "train"),
                            open_split(cfg.data_spec, "val"), self.capacity)


def _dump(state: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf)
    return buf.getvalue()


def _load(data: bytes) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    return state


def start_engines(spec: SearchSpec, run_name: str, gpus_in_cluster: float) -> list[str]:
    """Start the run's engines (one per GPU, or one on the CPU) and return their names."""
    count = max(1, int(gpus_in_cluster)) if spec.gpus_per_trial > 0 else 1
    # The reference run beside the search needs a share of a card, as a trial would.
    gpu_share = 0.0 if spec.gpus_per_trial == 0 else (
        0.9 if spec.include_defaults and not spec.reference_inside else 1.0)
    actor = ray.remote(FusionEngine)
    names = []
    for i in range(count):
        name = engine_name(run_name, i)
        # The driver owns the engine: it lives while this driver holds its handle, and dies
        # with the driver's Ray when the driver is killed (a resume starts new ones).
        _ENGINES.append(actor.options(name=name, namespace=NAMESPACE, num_cpus=spec.cpus_per_trial,
                                      num_gpus=gpu_share, max_concurrency=4 * spec.fuse + 8,
                                      ).remote(spec.fuse, max(1, int(spec.cpus_per_trial))))
        names.append(name)
    return names


_ENGINES: list[Any] = []  # the handles that keep this driver's engines alive


def stop_engines() -> None:
    """End this driver's engines when its search ends, so that their card and CPU go back to Ray
    at once (a driver that outlives its search, as a test session or a notebook does, would
    otherwise hold them; the next search's trials then waited for resources they could not get)."""
    while _ENGINES:
        ray.kill(_ENGINES.pop())


# --- a trial: the thin client ----------------------------------------------------------------------
def run_member(params: dict[str, Any], *, spec: SearchSpec, engines: Sequence[str],
               run_dir: str | None = None) -> None:
    """Train one configuration as a member of a fused group, reporting each validation to Tune
    as `tune.trial.run_trial` does."""
    from tune.trial import attempt, placement, report_infeasible, report_validation

    # Its config as its group trains it: the engine's threads (`start_engines`), so that a solo
    # run of trial_config.json reproduces the trial bit for bit.
    cfg = spec.trial_config(params).replace(num_threads=max(1, int(spec.cpus_per_trial)))
    trial_dir = ray_trials.trial_folder(run_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    run_folder.write_trial_config(trial_dir, cfg.to_dict())
    trial_id = tune.get_context().get_trial_id()
    with attempt(trial_dir, {**placement(), "fused": True}) as this:
        checkpoint = tune.get_checkpoint()
        state, after = None, 0
        with checkpoint.as_directory() if checkpoint else nullcontext() as given:
            start = ray_trials.resume_checkpoint(Path(given) if given else None, trial_dir)
            if start is not None:
                state = start.read_bytes()
                after = int(_load(state)["samples_seen"]) // cfg.epoch_samples
                this.note(resumed_from_epoch=after)
        engine = _join(engines, trial_id, cfg, state)
        this.note(engine=engine)
        handle = _engine(engine)
        try:
            while True:
                got: tuple[ValidationResult, bytes] | Infeasible
                got = ray.get(handle.next_result.remote(trial_id, after))
                if isinstance(got, Infeasible):  # its group ran out of memory
                    report_infeasible(cfg, got.reason)
                    break
                result, member_state = got
                after = result.epoch
                report_validation(result, cfg, _writer(member_state))
                if result.status != "running":
                    break
        finally:
            handle.leave.remote(trial_id)


def _writer(data: bytes) -> Callable[[Path], None]:
    """A ``save_state`` for `report_validation`: it writes ``data`` (a member's state)."""
    def write(path: Path) -> None:
        path.write_bytes(data)
    return write


def _engine(name: str) -> Any:
    """A `FusionEngine` actor by name. Any, not Ray's ActorHandle: Ray 2.60 types every method of
    one as Never, so a type checker would take the code after a call for unreachable and skip it."""
    return ray.get_actor(name, namespace=NAMESPACE)


def _join(engines: Sequence[str], trial_id: str, cfg: TrainConfig, state: bytes | None) -> str:
    """The first engine with room for this trial's shape; waits while every one is full (a
    member finishing or stopped frees a slot)."""
    deadline = time.monotonic() + 3 * LEASE_S
    while True:
        for name in engines:
            handle = _engine(name)
            if ray.get(handle.join.remote(trial_id, cfg.to_dict(), state)):
                return name
        if time.monotonic() > deadline:
            raise RuntimeError(f"no fused group had room for trial {trial_id} in "
                               f"{3 * LEASE_S:.0f} s")
        time.sleep(1.0)


class FusionCallback(Callback):
    """The driver's word to the engines that a trial has ended: ASHA's stop never reaches the
    trial's own code."""

    def __init__(self, engines: Sequence[str]) -> None:
        self.engines = list(engines)

    def _leave(self, trial: Trial) -> None:
        for name in self.engines:
            try:
                _engine(name).leave.remote(trial.trial_id)
            except ValueError:  # the engine is gone (the search is ending)
                pass

    def on_trial_complete(self, iteration: int, trials: list[Trial], trial: Trial,
                          **info: Any) -> None:
        self._leave(trial)

    def on_trial_error(self, iteration: int, trials: list[Trial], trial: Trial,
                       **info: Any) -> None:
        self._leave(trial)
