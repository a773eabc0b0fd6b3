"""The whole-step CUDA graph (`cuda_graph: true`, trainable/graphed.py).

On the CPU: the refusal, and the graph's code run without capture (``graphed._CAPTURE = False``,
the device-gather sampler): equal to the plain step bitwise, no host sync and no data-dependent
shape inside what a GPU would capture (a TorchDispatchMode lint), its LR equal to ``cfg.lr_at``,
exact resume, the warm-up's undo. The ``gpu`` tests at the end are the only ones that capture;
they were written on a CPU machine and have not run yet.
"""

from __future__ import annotations

import collections
import time

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from trainable import graphed, sampler
from trainable.checkpoint import load_optimizer
from trainable.config import TrainConfig
from trainable.errors import ConfigError
from trainable.loop import Trainer, make_optimizer, train_step

TINY = dict(epochs=3, epoch_samples=64, batch_size=8, validation_interval=1, use_amp=False,
            patch_size=8, num_threads=1, residual=True, optimizer="adam", weight_decay=0.0,
            model_lr=1e-3, device="auto")
FP16 = dict(use_amp=True, amp_dtype="float16")
# Ops that make the host wait for the device, or give shapes only the data knows: inside a
# capture the first raises, the second is frozen at capture time.
SYNC = {"_local_scalar_dense", "item", "is_nonzero", "nonzero", "masked_select", "unique",
        "_unique2", "unique_consecutive", "equal", "allclose", "repeat_interleave",
        "masked_scatter", "bincount", "histc"}


@pytest.fixture
def eager_graph_code(monkeypatch):
    """The graph's code without capture, on the CPU; the device gather as on a GPU."""
    monkeypatch.setattr(graphed, "_CAPTURE", False)
    monkeypatch.setattr(sampler, "_GATHER", "torch")


def _cfg(**over):
    return TrainConfig(**{**TINY, **over})


def _params(tr):
    return [p.detach().clone() for p in tr.model.parameters()]


def _plain_with_tensor_lr(cfg, tiny_train, tiny_val):
    """The plain Trainer (cuda_graph off) stepping as train_until does, but with the graph's
    tensor LR: the reference a graphed run must equal bitwise."""
    tr = Trainer(cfg.replace(cuda_graph=False), tiny_train, tiny_val)
    tr.optimizer = make_optimizer(cfg, tr.model.parameters(), tr.device, lr_tensor=True)
    lr = tr.optimizer.param_groups[0]["lr"]
    losses = []

    def run(updates):
        k = cfg.gradient_accumulation_steps
        for _ in range(updates):
            lr.copy_(torch.tensor(cfg.lr_at(tr.samples_seen), dtype=torch.float32))
            batches = [tr.sampler.sample(cfg.batch_size) for _ in range(k)]
            losses.append(train_step(tr.model, tr.optimizer, tr.scaler, batches,
                                     autocast=tr._autocast, grad_clip=cfg.grad_clip))
            tr.samples_seen += cfg.samples_per_update
    return tr, run, losses


# --- the refusal ------------------------------------------------------------------------------
def test_cuda_graph_is_refused_with_cpu_compile_or_a_non_bool():
    with pytest.raises(ConfigError, match=r"`cuda_graph` is True, but `device` is 'cpu'"):
        TrainConfig(cuda_graph=True, device="cpu")
    with pytest.raises(ConfigError, match=r"`cuda_graph` is True, but `compile` is true too"):
        TrainConfig(cuda_graph=True, compile=True, device="cuda")
    with pytest.raises(ConfigError, match=r"`cuda_graph` is 'yes', but must be true or false"):
        TrainConfig.from_dict({"cuda_graph": "yes"})


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_graph_on_a_machine_without_cuda_is_one_line_and_exit_2(tmp_path, capsys,
                                                                    tiny_train, tiny_val):
    from trainable.__main__ import main

    with pytest.raises(ConfigError, match=r"`cuda_graph` is True, but this run's device is 'cpu' "
                                          r"\(`device: auto` on a machine without CUDA\)"):
        Trainer(_cfg(cuda_graph=True), tiny_train, tiny_val)
    assert main(["--set", "cuda_graph=true", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "`cuda_graph` is True" in err and "cuda_graph: false" in err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_check_device_passes_a_cuda_device_and_names_auto_only_for_auto(monkeypatch):
    monkeypatch.setattr(graphed, "_CAPTURE", True)
    cfg = _cfg(cuda_graph=True, device="cuda")
    graphed.check_device(cfg, torch.device("cuda"))  # a torch.device needs no card
    graphed.check_device(cfg, torch.device("cuda", 1))
    with pytest.raises(ConfigError, match=r"^The value of `cuda_graph` is True, but this run's "
                                          r"device is 'cpu': a CUDA graph needs a CUDA device; "
                                          r"set cuda_graph: false\.$"):
        graphed.check_device(cfg, torch.device("cpu"))


def test_a_space_with_cuda_graph_needs_gpus(tmp_path):
    from tune.space import load_space

    path = tmp_path / "space.yaml"
    path.write_text("params:\n  model_lr: {loguniform: [1.0e-4, 5.0e-2]}\n"
                    "config: {cuda_graph: true}\n")
    with pytest.raises(ConfigError, match=r"space.yaml: `config.cuda_graph` cannot be true with "
                                          r"`resources.gpus` 0"):
        load_space(str(path))
    path.write_text(path.read_text() + "resources: {gpus: 1}\n")
    assert load_space(str(path)).base.cuda_graph
    path.write_text("params:\n  cuda_graph: {choice: [true, false]}\nresources: {gpus: 1}\n")
    with pytest.raises(ConfigError, match=r"cuda_graph"):
        load_space(str(path))


# --- the graph's code, run without capture on the CPU -------------------------------------------
@pytest.mark.parametrize("over", [
    {},
    dict(gradient_accumulation_steps=3),  # updates straddle chunks (chunks of 5 batches)
    dict(loss_border=2, grad_clip=0.05),  # the mask and clipping
    dict(optimizer="sgd", momentum=0.9, weight_decay=1e-4, model_lr=1e-2),
    dict(lr_schedule="cosine", warmup_fraction=0.2, lr_min_fraction=0.1),
    FP16,  # a GradScaler (fp16 autocast on the CPU too)
    dict(grad_clip=0.05, **FP16),  # unscale_ before clipping
], ids=["adam", "accumulation", "border-clip", "sgd", "cosine-warmup", "fp16", "fp16-clip"])
def test_the_static_step_equals_the_plain_step_bitwise(eager_graph_code, monkeypatch, tiny_train,
                                                       tiny_val, over):
    monkeypatch.setattr(sampler, "_CHUNK_HR_PIXELS", 5 * 8 * (8 * tiny_train.scale) ** 2)
    cfg = _cfg(cuda_graph=True, **over)
    graph = Trainer(cfg, tiny_train, tiny_val)
    plain, run, losses = _plain_with_tensor_lr(cfg, tiny_train, tiny_val)
    for updates in (7, 11):  # two intervals, the second starting mid-chunk
        stats = graph.train_until(graph.samples_seen + updates * cfg.samples_per_update)
        run(updates)
        assert stats.updates == updates and not stats.diverged
        assert stats.loss == pytest.approx(float(torch.stack(losses[-updates:]).mean()), rel=1e-6)
    assert graph._graphed.eager_updates == 18 and not graph._graphed.captured
    for a, b in zip(graph.model.parameters(), plain.model.parameters(), strict=True):
        assert torch.equal(a, b)
    for p, q in zip(graph.model.parameters(), plain.model.parameters(), strict=True):
        for key, value in plain.optimizer.state[q].items():
            assert torch.equal(graph.optimizer.state[p][key], value), key
    assert graph.scaler.state_dict() == plain.scaler.state_dict()
    assert graph.sampler.state_dict() == plain.sampler.state_dict()


def test_patches_are_the_eager_samplers_and_change_from_chunk_to_chunk(eager_graph_code,
                                                                       monkeypatch, tiny_train,
                                                                       tiny_val):
    # An unregistered generator in a graph would give the same patches at every replay: here the
    # chunks' random numbers are drawn outside, and each slot must hold its own chunk's patches.
    monkeypatch.setattr(sampler, "_CHUNK_HR_PIXELS", 2 * 8 * (8 * tiny_train.scale) ** 2)
    cfg = _cfg(cuda_graph=True, loss_border=1)
    tr = Trainer(cfg, tiny_train, tiny_val)
    tr.train_until(5 * cfg.samples_per_update)  # chunks 0, 1, 2; the ring holds 1 and 2
    ring = tr._graphed.ring
    ref = Trainer(cfg.replace(cuda_graph=False), tiny_train, tiny_val).sampler
    gather = ref.device_gather()
    for slot, chunk in enumerate(ring.held):
        gather.generator.manual_seed(sampler._chunk_seed(cfg.seed, chunk))
        expected = gather.sample(ring.size)
        for r, e in zip(ring.rings, expected, strict=True):
            assert torch.equal(r[slot * ring.size:(slot + 1) * ring.size], e)
    a, b = (ring.rings[0][i * ring.size:(i + 1) * ring.size] for i in range(2))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("over", [
    dict(lr_scheduler_milestones=(0.3, 0.6), lr_scheduler_gamma=0.2, warmup_fraction=0.1),
    dict(lr_schedule="cosine", warmup_fraction=0.15, lr_min_fraction=0.05, lr_cosine_end=0.9),
    dict(lr_schedule="cosine_restarts", warmup_fraction=0.1, lr_restart_period=0.2,
         lr_restart_mult=1.5, lr_min_fraction=0.01),
], ids=["multistep", "cosine", "cosine_restarts"])
def test_the_device_lr_is_cfg_lr_at_of_every_update(eager_graph_code, monkeypatch, tiny_train,
                                                    tiny_val, over):
    monkeypatch.setattr(graphed, "_TABLE_UPDATES", 5)  # the table refilled within an interval
    cfg = _cfg(cuda_graph=True, epochs=5, **over)
    tr = Trainer(cfg, tiny_train, tiny_val)
    seen = []
    tr.train_until(0)  # builds the StepGraph
    step = tr._graphed._step

    def spy(micro):
        seen.append(tr.optimizer.param_groups[0]["lr"].clone())
        return step(micro)
    tr._graphed._step = spy
    while not tr.done:
        tr.run_interval()
    spu = cfg.samples_per_update
    expected = [torch.tensor(cfg.lr_at(i * spu), dtype=torch.float32)
                for i in range(cfg.total_samples // spu)]
    assert len(seen) == len(expected) == 40
    assert all(torch.equal(a, b) for a, b in zip(seen, expected, strict=True))
    assert len({float(x) for x in seen}) > 3  # the schedule moved


def test_exact_resume_and_the_checkpoint_loads_without_cuda_graph(eager_graph_code, tiny_train,
                                                                  tiny_val, tmp_path):
    cfg = _cfg(cuda_graph=True, epochs=4, optimizer="sgd", momentum=0.9, model_lr=1e-2)
    straight = Trainer(cfg, tiny_train, tiny_val)
    straight.run()
    first = Trainer(cfg, tiny_train, tiny_val)
    first.run_interval()
    first.save(tmp_path / "state.pt")
    state = torch.load(tmp_path / "state.pt", weights_only=True)
    assert isinstance(state["optimizer"]["param_groups"][0]["lr"], float)  # as every checkpoint
    resumed = Trainer(cfg.replace(seed=7), tiny_train, tiny_val)
    live_lr = resumed.optimizer.param_groups[0]["lr"]
    resumed.run_interval()  # a StepGraph built before the load must be dropped by it
    resumed.load(tmp_path / "state.pt")
    assert resumed._graphed is None and resumed.optimizer.param_groups[0]["lr"] is live_lr
    resumed.run()
    assert all(torch.equal(a, b) for a, b in zip(straight.model.parameters(),
                                                 resumed.model.parameters(), strict=True))
    assert [h["psnr"] for h in resumed.history] == [h["psnr"] for h in straight.history]
    plain = Trainer(cfg.replace(cuda_graph=False), tiny_train, tiny_val)
    plain.load(tmp_path / "state.pt")  # a float-LR trainer reads it as its own
    assert plain.epoch == 1 and isinstance(plain.optimizer.param_groups[0]["lr"], float)
    plain.run_interval()


def test_each_chunk_is_drawn_once(eager_graph_code, monkeypatch, tiny_train, tiny_val):
    # The ring loads the chunks an update needs and keeps them: a chunk drawn twice costs a
    # card its draw again (three kernels and a gather per chunk), with the same patches.
    monkeypatch.setattr(sampler, "_CHUNK_HR_PIXELS", 5 * 8 * (8 * tiny_train.scale) ** 2)
    cfg = _cfg(cuda_graph=True, gradient_accumulation_steps=3)
    tr = Trainer(cfg, tiny_train, tiny_val)
    tr.train_until(0)
    ring = tr._graphed.ring
    loaded = []
    load = ring._load

    def counted(chunk, slot):
        loaded.append(chunk)
        load(chunk, slot)
    ring._load = counted
    tr.train_until(20 * cfg.samples_per_update)  # 60 batches in chunks of 5
    assert ring.per == 5 and loaded == list(range(12))


def test_a_healthy_interval_runs_past_the_divergence_checks(eager_graph_code, tiny_train,
                                                            tiny_val):
    # 40 updates, a divergence check at the 32nd that must find the loss finite; the seconds
    # spent drawing are a part of the interval's time.
    cfg = _cfg(cuda_graph=True, epochs=10)
    tr = Trainer(cfg, tiny_train, tiny_val)
    tr.train_until(0)
    t0 = time.perf_counter()
    done, diverged, seconds = tr._graphed.train(40, 0, 32)
    wall = time.perf_counter() - t0
    assert (done, diverged) == (40, False)
    assert 0.0 < seconds <= wall


def _step_graph(tr, lr=None, capture=None):
    opt = tr.optimizer if lr is None else torch.optim.SGD(tr.model.parameters(), lr=lr)
    return graphed.StepGraph(tr.cfg, tr.sampler, tr.model, opt, tr.scaler, tr._graphed._step,
                             capture=capture)


def test_a_step_graph_captures_only_on_a_cuda_device(eager_graph_code, tiny_train, tiny_val):
    tr = Trainer(_cfg(cuda_graph=True), tiny_train, tiny_val)
    tr.train_until(0)
    for capture in (True, False, None):
        assert _step_graph(tr, capture=capture).capturing is False, capture


@pytest.mark.parametrize("lr", [1e-3, torch.tensor([1e-3]), torch.tensor(1e-3, dtype=torch.float64)],
                         ids=["float", "1-dim", "float64"])
def test_a_step_graph_needs_a_0_dim_float32_lr_tensor(eager_graph_code, tiny_train, tiny_val, lr):
    tr = Trainer(_cfg(cuda_graph=True), tiny_train, tiny_val)
    tr.train_until(0)
    with pytest.raises(ValueError, match=r"^StepGraph needs the optimizer's lr as a 0-dim float32 "
                                         r"tensor on cpu, got "):
        _step_graph(tr, lr=lr)


def test_load_optimizer_keeps_the_live_lr_tensor_and_steps_on_the_device():
    model = torch.nn.Linear(3, 2)
    saved = torch.optim.Adam(model.parameters(), lr=0.125)  # not fused: CPU step tensors
    model(torch.ones(1, 3)).sum().backward()
    saved.step()
    lr = torch.tensor(1.0)
    live = torch.optim.Adam(model.parameters(), lr=lr, fused=True)
    load_optimizer(live, saved.state_dict())
    assert live.param_groups[0]["lr"] is lr and float(lr) == 0.125
    assert live.param_groups[0]["fused"] is True
    for p in model.parameters():
        step = live.state[p]["step"]
        assert step.dtype == torch.float32 and step.device == p.device and float(step) == 1.0


def test_divergence_is_caught_at_the_same_update_as_the_plain_loop(eager_graph_code, tiny_train,
                                                                   tiny_val):
    cfg = _cfg(cuda_graph=True, optimizer="sgd", model_lr=1e4, epochs=100)
    graph, plain = (Trainer(c, tiny_train, tiny_val) for c in (cfg, cfg.replace(cuda_graph=False)))
    a, b = (t.train_until(64 * cfg.samples_per_update) for t in (graph, plain))
    assert a.diverged and b.diverged and a.updates == b.updates == 32
    assert graph.sampler.state_dict() == plain.sampler.state_dict()


@pytest.mark.parametrize("before", [0, 5], ids=["fresh", "under-way"])
def test_the_warm_up_is_undone_in_place(eager_graph_code, tiny_train, tiny_val, before):
    # What _warm_up_and_capture does around its side stream, without the stream (CUDA only).
    # "under-way": a StepGraph is built anew after every load, so the warm-up can start from a
    # resumed optimizer's moments and a GradScaler's grown tracker, which it must put back, not
    # reset to a fresh optimizer's and scaler's.
    for over in ({}, FP16, dict(optimizer="sgd", momentum=0.9)):
        cfg = _cfg(cuda_graph=True, **over)
        tr, fresh = Trainer(cfg, tiny_train, tiny_val), Trainer(cfg, tiny_train, tiny_val)
        for t in (tr, fresh):
            t.train_until(before * cfg.samples_per_update)
        g = tr._graphed
        if before:
            assert tr.optimizer.state and (not tr.scaler.is_enabled()
                                           or tr.scaler.state_dict()["_growth_tracker"] > 0)
        g._write_lrs(before * cfg.samples_per_update, 8)
        ptrs = [p.data_ptr() for p in tr.model.parameters()]
        saved = graphed._Snapshot(g)
        for _ in range(graphed.WARMUP_UPDATES):
            g.ring.ensure(g.drawn, g.drawn, graphed._DrawTimer(tr.device))
            tr.optimizer.zero_grad(set_to_none=True)
            g._body()
            g.drawn += 1
        saved.restore()
        assert [p.data_ptr() for p in tr.model.parameters()] == ptrs
        # After the undo, the next updates are those of a trainer that never warmed up.
        for t in (tr, fresh):
            t.train_until((before + 6) * cfg.samples_per_update)
        assert all(torch.equal(a, b) for a, b in zip(tr.model.parameters(),
                                                     fresh.model.parameters(), strict=True))
        assert tr.scaler.state_dict() == fresh.scaler.state_dict()


# --- the capture lint -------------------------------------------------------------------------
class _Lint(TorchDispatchMode):
    """Every operator call: its name and output shapes, and the host syncs among them."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, tuple]] = []
        self.sync: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if name in SYNC:
            self.sync[name] += 1
        shapes = tuple(tuple(t.shape) for t in (out if isinstance(out, (tuple, list)) else (out,))
                       if isinstance(t, torch.Tensor))
        self.calls.append((name, shapes))
        return out


def _linted(tr, updates):
    """Run ``updates`` updates, linting each StepGraph._body and each chunk gather apart."""
    g = tr._graphed
    bodies, gathers = [], []
    body, gather = g._body, g.ring._gather_into_slot

    def lint_body():
        with _Lint() as lint:
            body()
        bodies.append(lint)

    def lint_gather():
        with _Lint() as lint:
            gather()
        gathers.append(lint)
    g._body, g.ring._gather_into_slot = lint_body, lint_gather
    tr.train_until(tr.samples_seen + updates * tr.cfg.samples_per_update)
    return bodies, gathers


@pytest.mark.parametrize("over", [dict(), FP16, dict(loss_border=2, grad_clip=0.1,
                                                       gradient_accumulation_steps=2)],
                         ids=["fp32", "fp16-scaler", "border-clip-accumulation"])
def test_capture_lint_no_host_sync_and_static_shapes(eager_graph_code, monkeypatch, tiny_train,
                                                     tiny_val, over):
    monkeypatch.setattr(sampler, "_CHUNK_HR_PIXELS", 3 * 8 * (8 * tiny_train.scale) ** 2)
    tr = Trainer(_cfg(cuda_graph=True, **over), tiny_train, tiny_val)
    # The first update creates the optimizer's and the scaler's state (a GPU's warm-up does).
    tr.train_until(tr.cfg.samples_per_update)
    bodies, gathers = _linted(tr, 7)  # across chunk boundaries, several chunks drawn
    assert len(bodies) == 7 and len(gathers) >= 2
    for lint in bodies + gathers:
        assert not lint.sync, dict(lint.sync)
    # Static control flow and shapes: every update (and every chunk's gather) the same calls.
    assert all(b.calls == bodies[0].calls for b in bodies)
    assert all(g.calls == gathers[0].calls for g in gathers)


def test_the_plain_step_and_loop_have_the_syncs_the_graph_removes(monkeypatch, tiny_train,
                                                                  tiny_val):
    # The lint sees a sync where there is one: the plain loop (fused Adam, as on CUDA) reads its
    # loss every 32 updates and at the end, and checks its weights at the end.
    from trainable import loop

    monkeypatch.setattr(sampler, "_GATHER", "torch")
    tr = Trainer(_cfg(), tiny_train, tiny_val)
    tr.optimizer = torch.optim.Adam(tr.model.parameters(), lr=1e-3, fused=True)
    steps = []

    def counted(*args, **kwargs):
        steps.append(1)
        return train_step(*args, **kwargs)
    monkeypatch.setattr(loop, "train_step", counted)  # the plain step, once per update
    with _Lint() as lint:
        stats = tr.train_until(64 * tr.cfg.samples_per_update)
    assert len(steps) == stats.updates == 64 and tr._graphed is None
    assert lint.sync == {"_local_scalar_dense": 3 + 6}


# --- on a GPU (written on a CPU machine: not yet run) -------------------------------------------
def _gpu_cfg(**over):
    return TrainConfig(**{**TINY, "device": "cuda", "cuda_graph": True, "epochs": 5,
                          "epoch_samples": 320, **over})


@pytest.fixture
def deterministic_cudnn(monkeypatch):
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    # Chunks of 16 batches (at batch 8, 8x8 LR patches): 200 updates replay the draw's graph 12
    # times, and the ring wraps.
    monkeypatch.setattr(sampler, "_CHUNK_HR_PIXELS", 16 * 8 * 32 * 32)


@pytest.mark.gpu
@pytest.mark.parametrize("over", [dict(), FP16, dict(use_amp=True, amp_dtype="bfloat16"),
                                  dict(lr_schedule="cosine", warmup_fraction=0.1, **FP16)],
                         ids=["fp32", "fp16-scaler", "bf16", "cosine-warmup-fp16"])
def test_gpu_graph_equals_eager_over_200_updates(deterministic_cudnn, monkeypatch, tiny_train,
                                                 tiny_val, over):
    cfg = _gpu_cfg(**over)  # 5 epochs x 40 updates
    graph = Trainer(cfg, tiny_train, tiny_val)
    graph.run()
    assert graph._graphed.captured and graph._graphed.eager_updates == 0
    monkeypatch.setattr(graphed, "_CAPTURE", False)
    eager = Trainer(cfg, tiny_train, tiny_val)
    eager.run()
    assert eager._graphed.eager_updates == 200 and graph.samples_seen == eager.samples_seen
    for a, b in zip(graph.model.parameters(), eager.model.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert graph.scaler.state_dict() == eager.scaler.state_dict()
    for g, e in zip(graph.history, eager.history, strict=True):
        assert g["psnr"] == pytest.approx(e["psnr"], abs=1e-3) and g["lr"] == e["lr"]
    # And against the float-LR loop it replaces: the same run up to the LR's rounding.
    plain = Trainer(cfg.replace(cuda_graph=False), tiny_train, tiny_val)
    plain.run()
    assert abs(plain.history[-1]["psnr"] - graph.history[-1]["psnr"]) < 0.05


@pytest.mark.gpu
@pytest.mark.parametrize("over", [FP16, dict(optimizer="sgd", momentum=0.9, model_lr=1e-2)],
                         ids=["adam-fp16", "sgd-fp32"])
def test_gpu_graph_resumes_exactly(deterministic_cudnn, tiny_train, tiny_val, tmp_path, over):
    cfg = _gpu_cfg(**over)
    straight = Trainer(cfg, tiny_train, tiny_val)
    straight.run()
    first = Trainer(cfg, tiny_train, tiny_val)
    first.run_interval()
    first.run_interval()
    first.save(tmp_path / "state.pt")
    resumed = Trainer(cfg.replace(seed=5), tiny_train, tiny_val)
    resumed.load(tmp_path / "state.pt")
    resumed.run()
    assert resumed._graphed.captured and resumed._graphed.eager_updates == 0
    assert all(torch.equal(a, b) for a, b in zip(straight.model.parameters(),
                                                 resumed.model.parameters(), strict=True))
    assert [h["psnr"] for h in resumed.history] == [h["psnr"] for h in straight.history]
    assert resumed.scaler.state_dict() == straight.scaler.state_dict()


@pytest.mark.gpu
def test_gpu_graph_patches_follow_the_eager_sampler(deterministic_cudnn, tiny_train, tiny_val):
    cfg = _gpu_cfg()
    tr = Trainer(cfg, tiny_train, tiny_val)
    tr.train_until(70 * cfg.samples_per_update)  # more than one chunk at batch 8, 8x8
    ring = tr._graphed.ring
    assert ring.held.count(-1) == 0
    gather = Trainer(cfg.replace(cuda_graph=False), tiny_train, tiny_val).sampler.device_gather()
    for slot, chunk in enumerate(ring.held):
        gather.generator.manual_seed(sampler._chunk_seed(cfg.seed, chunk))
        for r, e in zip(ring.rings, gather.sample(ring.size), strict=True):
            assert torch.equal(r[slot * ring.size:(slot + 1) * ring.size], e)


# --- a fused group's graph (trainable/fused_graph.py) -------------------------------------------
MEMBERS = [dict(seed=0, model_lr=1e-3, lr_scheduler_milestones=(0.5,)),
           dict(seed=1, model_lr=3e-3, lr_scheduler_milestones=(0.3, 0.7), lr_scheduler_gamma=0.3,
                grad_clip=0.05),
           dict(seed=2, model_lr=5e-4, lr_schedule="cosine", warmup_fraction=0.2, epochs=2)]


def _fused(cfg, tiny_train, tiny_val, members=MEMBERS):
    from trainable.fused import FusedTrainer

    group = FusedTrainer(cfg, tiny_train, tiny_val, len(members))
    for slot, over in enumerate(members):
        group.add(slot, cfg.replace(**over))
    return group


def _run_group(group):
    while any(not group.done(s) for s in group.members):
        group.run_interval()


@pytest.mark.parametrize("over", [dict(), FP16, dict(loss_border=2, gradient_accumulation_steps=2),
                                  dict(optimizer="sgd", momentum=0.9, weight_decay=1e-4)],
                         ids=["adam", "fp16", "border-accumulation", "sgd"])
def test_a_fused_groups_static_update_equals_its_plain_update_bitwise(eager_graph_code, tiny_train,
                                                                      tiny_val, over):
    cfg = _cfg(**over)
    plain = _fused(cfg, tiny_train, tiny_val)
    graph = _fused(cfg.replace(cuda_graph=True), tiny_train, tiny_val)
    _run_group(plain)
    _run_group(graph)
    # Every update of the group's 3 epochs ran the static code (the third member idles in the
    # third: its budget is 2 epochs).
    updates = 3 * cfg.epoch_samples // cfg.samples_per_update
    assert graph._graph is not None and graph._graph.eager_updates == updates
    assert graph._graph.replays == 0 and not graph._graph.capturing and plain._graph is None
    for slot in plain.members:
        a, b = plain.member_state(slot), graph.member_state(slot)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
        keys = ("epoch", "psnr", "psnr_frames", "loss", "lr", "status")
        assert [[h[k] for k in keys] for h in a["history"]] == \
            [[h[k] for k in keys] for h in b["history"]]
        assert a["scaler"] == b["scaler"] and a["sampler"] == b["sampler"]


def test_a_fused_groups_batches_must_keep_their_fields(eager_graph_code, tiny_train, tiny_val):
    from trainable.fused_draw import Batch

    group = _fused(_cfg(cuda_graph=True, loss_border=2), tiny_train, tiny_val)
    active = list(group.members)
    batches = group._streams.next_batches(active, 1, 8)
    group._graph.update(batches, active)
    assert all(b.mask is not None for b in batches)  # the loss border's
    with pytest.raises(ValueError, match="^a fused group's batches changed their fields$"):
        group._graph.update([Batch(b.x, b.target, b.bicubic, None, b.weight) for b in batches],
                            active)


def test_a_fused_groups_window_must_keep_its_micro_batches(eager_graph_code, tiny_train,
                                                           tiny_val):
    # A graph reads a fixed set of static batches: a window of fewer micro-batches than the
    # first is refused, not trained on a leftover of the previous window.
    group = _fused(_cfg(cuda_graph=True, gradient_accumulation_steps=2), tiny_train, tiny_val)
    active = list(group.members)
    batches = group._streams.next_batches(active, 2, 16)
    assert len(batches) == 2
    group._graph.update(batches, active)
    with pytest.raises(ValueError):
        group._graph.update(batches[:1], active)


def test_the_graph_is_captured_only_for_a_cuda_group():
    from types import SimpleNamespace

    from trainable.fused_graph import FusedStepGraph

    # torch.device("cuda") needs no card: only the capture itself does.
    for device, capture, capturing in [("cpu", True, False), ("cpu", False, False),
                                       ("cuda", True, True), ("cuda", False, False)]:
        group = SimpleNamespace(device=torch.device(device))
        assert FusedStepGraph(group, capture=capture).capturing is capturing, (device, capture)


class _GraphOnTheCpu:
    """What a captured CUDA graph does on a replay, on the CPU: the update it was captured for.
    It keeps what it was captured with, so a replay for another combination of clipping and
    weight decay, or after ``cover_steps`` replaced the step table (a real graph would run the
    wrong kernels or read a freed table), is recorded as stale."""

    def __init__(self, group, static, key):
        self.group, self.static, self.key = group, static, key
        self.table = getattr(group._opt, "_table", None)
        self.stale = 0

    def replay(self):
        opt = self.group._opt
        if (opt.clipping, opt.decay) != self.key or getattr(opt, "_table", None) is not self.table:
            self.stale += 1
        self.group._apply_update(self.static)


def _graph_on_the_cpu(group):
    """The group's FusedStepGraph capturing as on a card, with `_GraphOnTheCpu` as the graph
    (the capture itself, CUDA streams and torch.cuda.graph, is covered only by the GPU tests)."""
    from trainable.fused_graph import FusedStepGraph, _Captured

    class OnTheCpu(FusedStepGraph):
        def _capture(self, static, active, key):
            assert static is self._static and active
            graph = _GraphOnTheCpu(self.group, static, key)
            self.captured.append((key, graph))
            self._graphs[key] = _Captured(graph, graph.table)
            return self._graphs[key]

    g = OnTheCpu(group, capture=False)
    g.capturing, g.captured = True, []
    group._graph = g
    return g


@pytest.mark.parametrize("over", [dict(), FP16], ids=["adam", "fp16"])
def test_one_graph_per_clipping_and_decay_and_a_new_one_for_a_new_step_table(
        eager_graph_code, tiny_train, tiny_val, over):
    from trainable.fused import FusedTrainer

    # Member 2 (weight decay) trains 1 epoch, member 1 (clipping) 3, member 0 4: the update's
    # combination is (clip, decay) in the group's epoch 1, (clip, no decay) in 2 and 3, neither
    # after. Member 3 joins in epoch 3 with a longer budget: with fp16 Adam, cover_steps then
    # replaces the step table the graphs read, so the (clip, no decay) graph is captured again.
    members = {0: dict(seed=0, model_lr=1e-3, epochs=4),
               1: dict(seed=1, model_lr=3e-3, grad_clip=0.05, epochs=3),
               2: dict(seed=2, model_lr=5e-4, weight_decay=1e-4, epochs=1)}
    late = dict(seed=3, model_lr=2e-3, epochs=6)
    cfg = _cfg(cuda_graph=True, **over)

    def group_of(graph):
        group = FusedTrainer(cfg, tiny_train, tiny_val, 4)
        for slot, m in members.items():
            group.add(slot, cfg.replace(**m))
        on_cpu = _graph_on_the_cpu(group) if graph else None
        group.run_interval()
        group.run_interval()
        table = getattr(group._opt, "_table", None)
        group.add(3, cfg.replace(**late))
        replaced = getattr(group._opt, "_table", None) is not table
        _run_group(group)
        return group, on_cpu, replaced

    plain, _, _ = group_of(graph=False)
    group, g, replaced = group_of(graph=True)
    assert replaced == (over == FP16)
    keys = [key for key, _ in g.captured]
    expect = [(True, True), (True, False)] + [(True, False)] * replaced + [(False, False)]
    assert keys == expect
    updates = cfg.epoch_samples // cfg.samples_per_update * (2 + 6)  # member 3: epochs 3-8
    assert g.replays == updates and g.eager_updates == 0
    assert [graph.stale for _, graph in g.captured] == [0] * len(keys)
    for slot in plain.members:
        a, b = plain.member_state(slot), group.member_state(slot)
        assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"]), slot


def test_capture_lint_of_a_fused_update(eager_graph_code, tiny_train, tiny_val):
    for over in (dict(), FP16):
        group = _fused(_cfg(cuda_graph=True, **over), tiny_train, tiny_val)
        lints = []
        apply = group._apply_update

        def linted(batches, apply=apply, lints=lints):
            with _Lint() as lint:
                apply(batches)
            lints.append(lint)
        group._apply_update = linted
        group.run_interval()
        assert len(lints) == 8
        for lint in lints:
            assert not lint.sync, dict(lint.sync)
        assert all(lint.calls == lints[1].calls for lint in lints[1:])  # after the first


def test_a_fused_groups_warm_up_is_undone_in_place(eager_graph_code, tiny_train, tiny_val):
    from trainable.fused_graph import _Snapshot

    for over in (dict(), FP16, dict(optimizer="sgd", momentum=0.9)):
        cfg = _cfg(cuda_graph=True, **over)
        group, fresh = _fused(cfg, tiny_train, tiny_val), _fused(cfg, tiny_train, tiny_val)
        active = list(group.members)
        batches = group._streams.next_batches(active, 1, 8)
        fresh._streams.next_batches(active, 1, 8)
        group._prepare(active)
        saved = _Snapshot(group)
        for i in range(graphed.WARMUP_UPDATES):
            if i:
                group._prepare(active)
            group._apply_update(batches)
        saved.restore()
        group._apply_update(batches)  # the update the warm-up preceded
        fresh._update(batches, active)
        for slot in active:
            a, b = group.member_state(slot), fresh.member_state(slot)
            assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
            # Values, not only keys: step counts left 3 too high would give every member wrong
            # Adam bias corrections for the rest of its run.
            sa, sb = a["optimizer"]["state"], b["optimizer"]["state"]
            assert sa.keys() == sb.keys() and sa
            for i in sa:
                assert sa[i].keys() == sb[i].keys()
                assert all(torch.equal(sa[i][k], sb[i][k]) for k in sa[i]), (over, i)
            assert a["scaler"] == b["scaler"]


@pytest.mark.gpu
@pytest.mark.parametrize("over", [dict(), FP16, dict(use_amp=True, amp_dtype="bfloat16")],
                         ids=["fp32", "fp16", "bf16"])
def test_gpu_fused_graph_equals_the_fused_eager_group(deterministic_cudnn, monkeypatch, tiny_train,
                                                      tiny_val, over):
    cfg = _gpu_cfg(**over)
    graph = _fused(cfg, tiny_train, tiny_val)
    _run_group(graph)
    assert graph._graph.replays > 0 and graph._graph.eager_updates == 0
    monkeypatch.setattr(graphed, "_CAPTURE", False)
    eager = _fused(cfg, tiny_train, tiny_val)
    _run_group(eager)
    for slot in graph.members:
        a, b = graph.member_state(slot), eager.member_state(slot)
        for k in a["model"]:
            torch.testing.assert_close(a["model"][k], b["model"][k], rtol=1e-5, atol=1e-7)
        assert [h["epoch"] for h in a["history"]] == [h["epoch"] for h in b["history"]]
