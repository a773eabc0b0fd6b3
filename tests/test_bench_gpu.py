"""bench/gpu.py keeps running: its --device cpu --quick mode, as the suite can afford it."""

import json

import pytest
from benches import load_bench


def _bench():
    return load_bench("gpu")


def _run(clip_root, tmp_path, monkeypatch, *extra):
    monkeypatch.setenv("ESPCN_TUNE_CACHE", str(tmp_path / "cache"))  # the trial inherits it
    out = tmp_path / "gpu.json"
    rc = _bench().main(["--device", "cpu", "--quick", "--data", str(clip_root), "--out", str(out),
                        *extra])
    return rc, json.loads(out.read_text())


def test_quick_cpu_mode_runs_the_smoke_and_a_step_and_names_what_it_skipped(clip_root, tmp_path,
                                                                            monkeypatch, capsys):
    rc, report = _run(clip_root, tmp_path, monkeypatch)
    assert rc == 0
    assert report["smoke"]["bit_exact"] and report["smoke"]["steps"] == 20
    assert [(t["batch"], t["amp"], t["compile"]) for t in report["throughput"]] == [(16, "fp32", False)]
    assert report["throughput"][0]["steps_per_s"] > 0 and report["throughput"][0]["peak_mib"] is None
    assert report["packing"] == []
    # The graph and fused parts ran their code, uncaptured: every update eager, none a replay.
    [graph] = report["graph"]
    assert (graph["amp"], graph["captured"]) == ("fp32", False) and graph["eager_updates"] > 0
    assert [(f["members"], f["graph"]) for f in report["fused"]] == [(2, False), (2, True)]
    assert all(f["finished"] == 2 and f["aggregate_samples_per_s"] > 0 for f in report["fused"])
    assert report["fused"][1]["replays"] == 0 and report["fused"][1]["eager_updates"] > 0
    assert any("compile" in s for s in report["skipped"])
    assert any("packing" in s for s in report["skipped"])
    table = capsys.readouterr().out
    assert "bit-exact" in table and "skipped: compile" in table
    assert "b16 fp32 uncaptured" in table and "2 x b16 fp32 graph on" in table


@pytest.mark.slow
def test_quick_cpu_mode_packs_one_trial_through_tune_run(clip_root, tmp_path, monkeypatch):
    rc, report = _run(clip_root, tmp_path, monkeypatch, "--pack")
    assert rc == 0
    [one] = report["packing"]
    assert one["trials"] == one["finished"] == 1 and one["aggregate_samples_per_s"] > 0


def test_cuda_is_refused_without_a_device(clip_root, tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert _bench().main(["--device", "cuda", "--data", str(clip_root)]) == 2
    assert "no CUDA device" in capsys.readouterr().err


def test_step_ops_counts_the_draw_and_the_update(clip_root, tmp_path, monkeypatch, capsys):
    module = load_bench("step_ops")
    monkeypatch.setenv("ESPCN_TUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(module.sampler_module, "_GATHER", "torch")
    # Chunks of 4 batches of 8 HR patches of 32x32, so the count trains 9 steps, not 2,049.
    monkeypatch.setattr(module.sampler_module, "_CHUNK_HR_PIXELS", 4 * 8 * 32 * 32)
    module.main(["--batch", "8", "--data", str(clip_root), "--patch", "8"])
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [r[:2] for r in rows] == [["8", "fp32"], ["8", "bf16"], ["8", "fp16"]]
    for _b, _amp, chunk, draw, update, _total in rows:
        assert int(chunk) == 4 and 0 < float(draw) < float(update)
