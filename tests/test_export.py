"""analysis.export: config files in three formats, weights, overwrite rules, bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
import yaml

from analysis.export import main
from tests import run_fixture as fx
from trainable.config import TrainConfig
from trainable.model import EarlyFusionESPCN
from trainable.weights import load_file as load_state_file


@pytest.fixture
def run(tmp_path: Path) -> Path:
    return fx.write_small_run(tmp_path)


def _trial_config(run: Path, trial: str) -> dict:
    result = fx.trial_dir(run, trial) / "result.json"
    return json.loads(result.read_text().splitlines()[0])["trial_config"]


def _checkpoint_model(run: Path, trial: str, name: str) -> dict:
    return load_state_file(fx.trial_dir(run, trial) / name / "trainer.pt")["model"]


def test_yaml_is_a_train_config_as_is(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(run)]) == 0
    out = run / "export" / f"{fx.WINNER}.yaml"
    assert str(out) in capsys.readouterr().out
    text = out.read_text()
    config = TrainConfig.from_dict(yaml.safe_load(text))
    assert config.to_dict() == _trial_config(run, fx.WINNER)
    header = "\n".join(ln for ln in text.splitlines() if ln.startswith("#"))
    for expected in (f"trial: {fx.WINNER}", "psnr: 26.8", "ssim: 0.734", fx.EVALUATION,
                     f"bicubic_psnr: {fx.BICUBIC_PSNR}", "versions.torch: 2.13.0",
                     "command: python -m tune.run --space smoke.yaml", "run: smoke"):
        assert expected in header


def test_json_holds_provenance_and_config(run: Path, tmp_path: Path) -> None:
    out = tmp_path / "winner.json"
    assert main([str(run), "--format", "json", "--out", str(out)]) == 0
    doc = json.loads(out.read_text())
    assert set(doc) == {"provenance", "config"}
    assert TrainConfig.from_dict(doc["config"]).to_dict() == _trial_config(run, fx.WINNER)
    prov = doc["provenance"]
    assert prov["trial"] == fx.WINNER and prov["psnr"] == 26.8 and prov["epoch"] == 4
    assert prov["bicubic_psnr"] == fx.BICUBIC_PSNR and prov["evaluation"] == fx.EVALUATION
    assert prov["versions"]["ray"] == "2.60.0"
    assert prov["command"][:3] == ["python", "-m", "tune.run"]
    assert prov["weights"] == "winner.pt" and (tmp_path / "winner.pt").is_file()


@pytest.mark.parametrize(("scope", "checkpoint"), [("best", "checkpoint_000000"),
                                                   ("last", "checkpoint_000001")])
def test_weights_load_weights_only_into_the_model(run: Path, tmp_path: Path, scope: str,
                                                  checkpoint: str) -> None:
    # Trial 00000 keeps its best (epoch 2) and its latest (epoch 4) checkpoint.
    out = tmp_path / f"{scope}.yaml"
    assert main([str(run), "--trial", "3f2a1000", "--scope", scope, "--out", str(out)]) == 0
    state = torch.load(out.with_suffix(".pt"), weights_only=True)
    model = EarlyFusionESPCN(3, 4, False)
    model.load_state_dict(state, strict=True)
    expected = _checkpoint_model(run, "3f2a1000", checkpoint)
    assert all(torch.equal(state[k], expected[k]) for k in expected)
    prov_epoch = 2 if scope == "best" else 4
    assert f"epoch: {prov_epoch}" in out.read_text()


def test_refuses_to_overwrite_without_force(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(run)]) == 0
    out = run / "export" / f"{fx.WINNER}.yaml"
    out.write_text("# edited by hand\n")
    capsys.readouterr()
    assert main([str(run)]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--force" in err
    assert out.read_text() == "# edited by hand\n"
    assert main([str(run), "--force"]) == 0
    assert out.read_text().startswith("# espcn-tune export")


def test_formats_share_identical_weights_but_never_clobber_others(
        run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(run)]) == 0
    assert main([str(run), "--format", "py", "--no-score"]) == 0  # same trial, same weights
    assert "already there, same weights" in capsys.readouterr().out
    weights = run / "export" / f"{fx.WINNER}.pt"
    torch.save({"other": torch.zeros(1)}, weights)
    assert main([str(run), "--format", "json"]) == 2
    assert str(weights) in capsys.readouterr().err
    assert not (run / "export" / f"{fx.WINNER}.json").exists()  # nothing half-written
    assert main([str(run), "--format", "json", "--force"]) == 0


def test_trial_without_checkpoint_still_gets_its_config(
        run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    out = tmp_path / "stopped.yaml"
    with caplog.at_level(logging.WARNING):
        assert main([str(run), "--trial", "3f2a1002", "--out", str(out)]) == 0
    assert "no kept checkpoint" in caplog.text
    assert out.is_file() and not out.with_suffix(".pt").exists()
    assert yaml.safe_load(out.read_text())["model_lr"] == 1e-4


def test_unknown_trial_lists_valid_ids(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(run), "--trial", "nope_00009"]) == 2
    err = capsys.readouterr().err
    assert "nope_00009" in err and fx.WINNER in err and fx.ERRORED in err


def test_not_a_run_and_zero_finished(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 2
    assert str(tmp_path) in capsys.readouterr().err
    broken = tmp_path / "broken"
    fx.write_meta(broken)
    fx.write_trial(broken, 0, fx.DEFAULTS, [27.0], error=True, checkpoint_epochs=(1,))
    assert main([str(broken)]) == 2
    assert "no finished trials" in capsys.readouterr().err
    assert not (broken / "export").exists()


def test_out_may_not_take_the_weights_name(run: Path, tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(run), "--out", str(tmp_path / "model.pt")]) == 2
    assert ".pt" in capsys.readouterr().err


class _RunsOnLoad:
    """Pickles as a call of ``fn(*args)``: what a crafted checkpoint does to run code on load."""

    def __init__(self, fn, *args) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _touch_marker(marker: Path) -> list:
    import os

    from numpy.testing._private.utils import runstring  # a numpy helper that calls exec

    return [(os.system, (f"touch {marker}",)),
            (runstring, (f"open({str(marker)!r}, 'w').close()", {}))]


@pytest.mark.parametrize("attack", [0, 1], ids=["os.system", "numpy-exec"])
def test_crafted_checkpoint_runs_no_code(run: Path, tmp_path: Path, attack: int,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    fn, args = _touch_marker(marker)[attack]
    ckpt = fx.trial_dir(run, fx.WINNER) / "checkpoint_000000" / "trainer.pt"
    state = torch.load(ckpt, weights_only=True)
    state["model"]["evil"] = _RunsOnLoad(fn, *args)
    torch.save(state, ckpt)
    assert main([str(run)]) == 2
    err = capsys.readouterr().err
    assert not marker.exists()
    assert err.count("\n") == 1 and str(ckpt) in err and "weights_only" in err
    assert not (run / "export").exists()


def test_an_export_does_not_pin_the_searchs_thread_share(run: Path, tmp_path: Path) -> None:
    """Issue 27, item 6: a trial runs with `num_threads` = its Ray CPU share (1); the export
    carried it, so `python -m trainable --config` used one thread on any machine."""
    result = fx.trial_dir(run, fx.WINNER) / "result.json"
    lines = [json.loads(x) for x in result.read_text().splitlines()]
    for line in lines:
        line["trial_config"]["num_threads"] = 1
    result.write_text("".join(json.dumps(x) + "\n" for x in lines))
    for fmt in ("yaml", "json"):
        out = tmp_path / f"winner.{fmt}"
        assert main([str(run), "--format", fmt, "--out", str(out)]) == 0
        doc = yaml.safe_load(out.read_text())  # JSON is YAML
        config = doc["config"] if fmt == "json" else doc
        assert config["num_threads"] == 0
        assert {**config, "num_threads": 1} == lines[0]["trial_config"]
