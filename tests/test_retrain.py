"""python -m analysis.retrain (and its alias analysis.export --retrain): winner and defaults
retrained with fresh seeds, scored on the test split.

The synthetic run (tests/run_fixture.py) gets real, tiny trial configs: the clip folders of the
``clip_root`` fixture as data, 2 epochs of 128 samples, batch 8, fp32, a validation every epoch.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from analysis import retrain
from analysis.export import main
from analysis.tables import load_run
from tests import run_fixture as fx
from trainable.config import TrainConfig
from trainable.evaluate import convention
from trainable.model import EarlyFusionESPCN

DEFAULTS_TRIAL = "3f2a1000"


def _tiny(run: Path, clip_root: Path, cache: Path, *, default_config: bool = True) -> Path:
    """Point every config of the synthetic run at the clips, with a budget of seconds."""
    tiny = {"data": str(clip_root), "epochs": 2, "epoch_samples": 128, "batch_size": 8,
            "use_amp": False, "validation_interval": 1, "cache_dir": str(cache)}
    for result in run.glob("*/result.json"):
        lines = [json.loads(line) for line in result.read_text().splitlines()]
        for line in lines:
            line["trial_config"].update(tiny)
        result.write_text("".join(json.dumps(line) + "\n" for line in lines))
    meta_path = run / "espcn_tune.record"
    meta = json.loads(meta_path.read_text())
    meta["default_config"] = {**meta["default_config"], **tiny} if default_config else None
    meta_path.write_text(json.dumps(meta))
    return run


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("frame-cache")


@pytest.fixture(scope="module")
def retrained(tmp_path_factory: pytest.TempPathFactory, clip_root: Path, cache: Path):
    """One python -m analysis.retrain of the synthetic run (default output folder); (run, exit
    code, stdout)."""
    run = _tiny(fx.write_small_run(tmp_path_factory.mktemp("retrain")), clip_root, cache)
    out = io.StringIO()  # capsys is function-scoped: capture by hand
    with contextlib.redirect_stdout(out):
        rc = retrain.main([str(run)])
    return run, rc, out.getvalue()


def test_report_has_both_configs_on_the_test_split(retrained) -> None:
    run, rc, stdout = retrained
    assert rc == 0
    report = json.loads((run / "retrain" / "retrain.json").read_text())
    assert set(report["configs"]) == {"winner", "defaults"}
    winner, defaults = report["configs"]["winner"], report["configs"]["defaults"]
    assert winner["trial"] == fx.WINNER and defaults["trial"] == DEFAULTS_TRIAL
    assert report["split"] == "test" and report["seeds"] == [1000]  # no trial used seed 1000
    # The configs as the run recorded them, trained to their full budget.
    assert winner["config"]["model_lr"] == 0.02 and defaults["config"]["model_lr"] == 0.01
    assert winner["config"]["lr_scheduler_milestones"] == [0.5, 0.8]
    assert "default_config" in defaults["source"]
    for c in (winner, defaults):
        assert [r["seed"] for r in c["runs"]] == [1000]
        r = c["runs"][0]
        assert r["status"] == "completed" and r["epochs"] == 2
        assert 1 <= r["best_epoch"] <= 2
        for key in ("test_psnr", "test_ssim", "val_psnr"):
            assert math.isfinite(r[key])
        assert c["test_psnr"] == r["test_psnr"]  # the mean over one seed
        assert c["gain_db"] == pytest.approx(c["test_psnr"] - report["bicubic"]["psnr"])
    # One bicubic baseline: the same test frames through the same code.
    assert winner["bicubic_psnr"] == defaults["bicubic_psnr"] == report["bicubic"]["psnr"]
    assert winner["bicubic_ssim"] == defaults["bicubic_ssim"] == report["bicubic"]["ssim"]
    assert math.isfinite(report["bicubic"]["psnr"])
    assert report["winner_minus_defaults"]["psnr_db"] == pytest.approx(
        winner["test_psnr"] - defaults["test_psnr"])
    assert report["evaluation"] == "PSNR/SSIM on " + convention(0)  # as tune.run records it
    assert "selection bias" in report["note"]
    assert not report["warnings"]
    # stdout says the same.
    for text in ("winner", "defaults", "bicubic", "winner - defaults", "selection bias",
                 "retrain.json", f"{winner['test_psnr']:.3f}"):
        assert text in stdout


def test_each_retraining_is_a_python_m_trainable_folder(retrained) -> None:
    import torch

    run, _, _ = retrained
    for label in ("winner", "defaults"):
        d = run / "retrain" / f"{label}-seed1000"
        cfg = TrainConfig.from_dict(yaml.safe_load((d / "config.yaml").read_text()))
        assert cfg.seed == 1000 and cfg.epochs == 2
        assert "python -m trainable --config" in (d / "command.txt").read_text()
        summary = json.loads((d / "summary.json").read_text())
        report = json.loads((run / "retrain" / "retrain.json").read_text())
        assert summary["test"]["psnr"] == report["configs"][label]["runs"][0]["test_psnr"]
        model = EarlyFusionESPCN(cfg.frames, cfg.scale, cfg.residual)
        model.load_state_dict(torch.load(d / "model.pt", weights_only=True))  # best validated


def test_refuses_to_overwrite_without_force(retrained, capsys: pytest.CaptureFixture[str]) -> None:
    run, _, _ = retrained
    report = run / "retrain" / "retrain.json"
    before = report.read_text()
    for refused in (lambda: retrain.main([str(run)]), lambda: main([str(run), "--retrain"])):
        assert refused() == 2  # the command and export's --retrain alias alike
        err = capsys.readouterr().err
        assert str(report) in err and "--force" in err
    assert report.read_text() == before


def test_bad_input_exits_2_before_training(tmp_path: Path, clip_root: Path, cache: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path), "--retrain"]) == 2
    assert "not an espcn-tune run folder" in capsys.readouterr().err
    run = _tiny(fx.write_small_run(tmp_path), clip_root, cache)
    assert main([str(run), "--retrain", "--trial", "nope_00009"]) == 2
    err = capsys.readouterr().err
    assert "nope_00009" in err and fx.WINNER in err
    assert retrain.main([str(run), "--trial", "nope_00009"]) == 2
    assert capsys.readouterr().err == err
    assert main([str(run), "--retrain", "--seeds", "0"]) == 2
    assert "positive integer" in capsys.readouterr().err
    assert main([str(run), "--seeds", "2"]) == 2  # only with --retrain
    assert "--retrain" in capsys.readouterr().err
    # A data set without a test split fails before any training.
    meta = json.loads((run / "espcn_tune.record").read_text())
    missing = tmp_path / "no-such-data"
    meta["default_config"]["data"] = str(missing)
    (run / "espcn_tune.record").write_text(json.dumps(meta))
    assert main([str(run), "--retrain"]) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (run / "retrain").exists()


def test_defaults_without_a_record_and_fresh_seeds(tmp_path: Path, clip_root: Path,
                                                   cache: Path) -> None:
    run_dir = _tiny(fx.write_small_run(tmp_path), clip_root, cache, default_config=False)
    # Trial 00002 happened to train with seed 1000: retraining must not reuse it.
    result = fx.trial_dir(run_dir, 2) / "result.json"
    line = json.loads(result.read_text())
    line["trial_config"]["seed"] = 1000
    result.write_text(json.dumps(line) + "\n")
    run = load_run(run_dir)
    winner, defaults = retrain.plan(run)
    assert winner.trial == fx.WINNER and defaults.trial is None  # no defaults trial recognised
    base = TrainConfig()
    assert defaults.config.model_lr == base.model_lr and defaults.config.batch_size == base.batch_size
    assert (defaults.config.optimizer, defaults.config.residual) == (base.optimizer, base.residual)
    # The run's data, budget, scoring and hardware (use_amp included: bf16 autocast would make
    # the defaults ~10x slower on a CPU), as the reference run beside a search takes them.
    for key in retrain.RUN_SETTINGS:
        if key not in ("seed", "num_threads"):  # fresh seeds; threads reset for retraining
            assert getattr(defaults.config, key) == getattr(winner.config, key), key
    assert (winner.config.num_threads, defaults.config.num_threads) == (0, 0)
    assert retrain.fresh_seeds(run, 3) == [1001, 1002, 1003]


def test_defaults_trial_as_winner_is_trained_once(tmp_path: Path, clip_root: Path,
                                                  cache: Path) -> None:
    run = load_run(_tiny(fx.write_small_run(tmp_path), clip_root, cache))
    winner, defaults = retrain.plan(run, DEFAULTS_TRIAL)
    assert winner.trial == defaults.trial == DEFAULTS_TRIAL
    assert retrain._same_config(winner.config, defaults.config)
    other, _ = retrain.plan(run)
    assert not retrain._same_config(other.config, defaults.config)


def test_render_several_seeds_and_a_diverged_one() -> None:
    runs = [{"seed": 1000, "status": "completed", "test_psnr": 30.0, "test_ssim": 0.9,
             "gain_db": 1.0, "bicubic_psnr": 29.0, "bicubic_ssim": 0.85},
            {"seed": 1001, "status": "diverged", "test_psnr": None, "test_ssim": None,
             "gain_db": None, "bicubic_psnr": None, "bicubic_ssim": None}]
    assert retrain._mean([r["test_psnr"] for r in runs]) is None  # a diverged seed never vanishes
    assert retrain._std([30.0, 31.0]) == pytest.approx(0.7071, abs=1e-4)
    config = {"trial": "t1", "test_psnr": None, "test_ssim": None, "gain_db": None,
              "search_psnr": 31.5, "runs": runs}
    text = retrain.render({
        "seeds": [1000, 1001], "split": "test", "evaluation": "PSNR/SSIM on Y",
        "configs": {"winner": config, "defaults": {**config, "trial": None}},
        "bicubic": {"psnr": 29.0, "ssim": 0.85},
        "winner_minus_defaults": {"psnr_db": None, "ssim": None},
        "warnings": ["winner: no test score for seed(s) 1001 (diverged)"], "note": retrain.BIAS_NOTE})
    assert "seed 1001" in text and "diverged" in text and "30.000" in text
    assert "winner - defaults: - dB PSNR" in text and "warning: winner" in text


def _independent_test_psnr(cfg: TrainConfig, predict, crop: int = 0, rounded: bool = True) -> float:
    """Mean PSNR over the test split's target frames, computed here in numpy: every target's
    clamped frame window in, output clamped and rounded to 8 bits (or not: the source
    repository's convention), PSNR of the Y frame (peak 255, ``crop`` pixels cropped at each
    border) against the HR frame. `predict` maps (1, frames, h, w) in [0, 1] to an image."""
    import torch

    from trainable.store import open_split

    data = open_split(cfg.data_spec, "test")
    values = []
    for g in data.groups:
        lr, hr = np.asarray(g.lr), np.asarray(g.hr)
        for clip in range(lr.shape[0]):
            for c in g.centres:
                times = np.clip(np.arange(c - cfg.frames // 2, c + cfg.frames // 2 + 1),
                                0, lr.shape[1] - 1)
                x = torch.from_numpy(lr[clip, times].astype(np.float32) / 255.0)[None]
                with torch.no_grad():
                    out = predict(x)[0, 0].numpy().astype(np.float64)
                sr = np.clip(out, 0.0, 1.0) * 255.0
                sr = np.rint(sr) if rounded else sr
                inner = (slice(crop, -crop or None),) * 2
                mse = np.mean((sr[inner] - hr[clip, c].astype(np.float64)[inner]) ** 2)
                values.append(10 * math.log10(255.0**2 / mse))
    return float(np.mean(values))


def test_report_numbers_match_scores_computed_independently(retrained) -> None:
    """The report's test PSNR, bicubic PSNR and gain, recomputed from each folder's model.pt."""
    import torch

    from trainable.imaging import upscale_bicubic

    run, _, _ = retrained
    report = json.loads((run / "retrain" / "retrain.json").read_text())
    for label in ("winner", "defaults"):
        d = run / "retrain" / f"{label}-seed1000"
        cfg = TrainConfig.from_dict(yaml.safe_load((d / "config.yaml").read_text()))
        model = EarlyFusionESPCN(cfg.frames, cfg.scale, cfg.residual)
        model.load_state_dict(torch.load(d / "model.pt", weights_only=True))
        model.eval()
        test_psnr = _independent_test_psnr(cfg, model)
        def bicubic(x, mid=cfg.frames // 2, scale=cfg.scale):
            return upscale_bicubic(x[:, mid:mid + 1], scale)

        bicubic_psnr = _independent_test_psnr(cfg, bicubic)
        c = report["configs"][label]
        # float32 network and float64 PSNR here against the trainer's own path: within 1e-3 dB.
        assert c["test_psnr"] == pytest.approx(test_psnr, abs=1e-3)
        assert c["bicubic_psnr"] == pytest.approx(bicubic_psnr, abs=1e-3)
        assert c["gain_db"] == pytest.approx(test_psnr - bicubic_psnr, abs=2e-3)
        # Beside it, as the source repository's test.py scores: crop = scale, float output.
        src = c["source_convention"]
        src_psnr = _independent_test_psnr(cfg, model, crop=cfg.scale, rounded=False)
        src_bicubic = _independent_test_psnr(cfg, bicubic, crop=cfg.scale, rounded=False)
        assert src["test_psnr"] == pytest.approx(src_psnr, abs=1e-3)
        assert src["bicubic_psnr"] == pytest.approx(src_bicubic, abs=1e-3)
        assert abs(src["test_psnr"] - c["test_psnr"]) > 1e-3  # another number, not a copy


@pytest.mark.parametrize("jobs, cores, expected", [
    (2, 2, (2, 1)), (2, 16, (2, 8)), (4, 2, (2, 1)), (2, 1, (1, 1)), (6, 3, (3, 1))])
def test_trainings_share_the_cores(jobs: int, cores: int, expected: tuple[int, int]) -> None:
    from analysis.parallel_training import plan

    assert plan(jobs, cores) == expected


def test_the_two_trainings_run_side_by_side_and_say_each_validation(
        tmp_path: Path, clip_root: Path, cache: Path, capfd: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27, item 6: `analysis.retrain` said nothing for 7 minutes after "[1/2] training
    winner", and trained its two configurations one after the other, one thread each."""
    from analysis import parallel_training

    monkeypatch.setattr(parallel_training, "usable_cores", lambda: 2)
    run = _tiny(fx.write_small_run(tmp_path), clip_root, cache)
    assert retrain.main([str(run), "--out", str(tmp_path / "out")]) == 0
    err = capfd.readouterr().err
    assert "2 at a time, one process each with 1 thread(s)" in err
    for label in ("winner", "defaults"):
        for epoch in (1, 2):  # a line per validation, from each training's own process
            assert f"[{label} seed 1000] epoch {epoch}/2 " in err, err
        config = yaml.safe_load((tmp_path / "out" / f"{label}-seed1000" / "config.yaml")
                                .read_text())
        assert config["num_threads"] == 0  # its thread share is the process's, not the file's
