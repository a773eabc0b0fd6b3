"""Bad files and values that used to end in a traceback: each is one line on stderr and exit 2
(or, for a search that produced nothing, a clear summary and exit 1)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest

from analysis.tables import load_run
from tests import run_fixture as fx
from trainable.__main__ import main as train_main
from tune.run import main as run_main

BINARY = b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00"


def _one_line(err: str, *needles: str) -> None:
    assert err.count("\n") == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, err


def test_binary_space_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    space = tmp_path / "space.yaml"
    space.write_bytes(BINARY)
    assert run_main(["--space", str(space), "--dry-run"]) == 2
    _one_line(capsys.readouterr().err, str(space), "UTF-8")


def test_binary_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_bytes(BINARY)
    assert train_main(["--config", str(config), "--out", str(tmp_path / "out")]) == 2
    _one_line(capsys.readouterr().err, str(config), "UTF-8")
    assert not (tmp_path / "out").exists()


def test_duplicate_key_in_config_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("model_lr: 0.01\nbatch_size: 8\nmodel_lr: 0.1\n")
    assert train_main(["--config", str(config), "--out", str(tmp_path / "out")]) == 2
    _one_line(capsys.readouterr().err, f"{config}:3: invalid YAML",
              "duplicate key 'model_lr' (first on line 1)")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("content, needle", [
    (b"model_lr: 0.01\n\x00\x01\x02", "binary file (NUL byte at offset 15)"),
    (b"model_lr: 0.01\n\x07\x08", "not YAML text (character '\\x07'"),
])
def test_binary_but_utf8_files_are_refused_by_both_readers(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, needle: str) -> None:
    # Valid UTF-8, so only the reader's own checks stand between these bytes and a traceback.
    path = tmp_path / "file.yaml"
    path.write_bytes(content)
    assert train_main(["--config", str(path), "--out", str(tmp_path / "out")]) == 2
    _one_line(capsys.readouterr().err, str(path), needle)
    assert run_main(["--space", str(path), "--dry-run"]) == 2
    _one_line(capsys.readouterr().err, str(path), needle)


def test_set_overrides_validate_once_with_the_file(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # The file alone is invalid (batch 0) and --set mends it: one validation of the merged keys.
    config = tmp_path / "config.yaml"
    config.write_text("batch_size: 0\n")
    assert train_main(["--config", str(config), "--set", "batch_size=0",
                       "--out", str(tmp_path / "out")]) == 2
    _one_line(capsys.readouterr().err, f"{config} with --set", "batch_size")


def test_set_value_that_is_not_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert train_main(["--set", "model_lr=[1", "--out", str(tmp_path / "out")]) == 2
    _one_line(capsys.readouterr().err, "--set 'model_lr=[1'", "invalid YAML")


def test_config_keys_of_mixed_types(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("{1: 2, a: 3}\n")
    assert train_main(["--config", str(config), "--out", str(tmp_path / "out")]) == 2
    _one_line(capsys.readouterr().err, str(config), "the key 1 is a int")


def test_space_config_keys_of_mixed_types(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    space = tmp_path / "space.yaml"
    space.write_text(textwrap.dedent("""\
        params:
          model_lr: {loguniform: [1.0e-3, 5.0e-2]}
        config: {1: 2, a: 3}
        """))
    assert run_main(["--space", str(space), "--dry-run"]) == 2
    _one_line(capsys.readouterr().err, str(space))


def test_binary_params_json_is_read_from_the_results(tmp_path: Path) -> None:
    run = fx.write_small_run(tmp_path)
    (fx.trial_dir(run, fx.WINNER) / "params.json").write_bytes(BINARY)
    trials = load_run(run).trials
    assert fx.WINNER in set(trials["trial"])


def test_binary_result_json_lines_are_skipped(tmp_path: Path) -> None:
    run = fx.write_small_run(tmp_path)
    result = fx.trial_dir(run, fx.WINNER) / "result.json"
    result.write_bytes(result.read_bytes() + BINARY + b"\n")
    assert fx.WINNER in set(load_run(run).trials["trial"])


def test_summary_of_a_search_where_every_trial_ran_out_of_memory(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from tune.space import load_space
    from tune.summary import summarise

    spec = load_space("smoke")
    oom = {"epoch": 4, "samples": 0, "psnr": 0.0, "best_psnr": 0.0, "status": "infeasible",
           "reason": "CUDA out of memory", "trial_id": "a"}
    grid = [SimpleNamespace(error=None, metrics=dict(oom), config={}, path="x")] * 3
    assert summarise(grid, spec, tmp_path / "run", {"evaluation": "PSNR"}) is None
    out = capsys.readouterr().out
    assert "3 infeasible" in out and "out of memory" in out


def test_corrupt_resume_checkpoint(clip_root, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("ESPCN_TUNE_CACHE", str(tmp_path / "cache"))
    bad = tmp_path / "checkpoint.pt"
    bad.write_bytes(BINARY)
    assert train_main(["--set", f"data={clip_root}", "--set", "epochs=1", "--out",
                       str(tmp_path / "out"), "--resume", str(bad)]) == 2
    _one_line(capsys.readouterr().err, f"--resume {bad}", "not a readable checkpoint")


def test_resume_of_a_run_that_never_started(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    run_dir = tmp_path / "half"
    run_dir.mkdir()
    (run_dir / "espcn_tune.record").write_text(json.dumps({"space_file": "smoke"}))
    assert run_main(["--storage", str(tmp_path), "--resume", "half"]) == 2
    _one_line(capsys.readouterr().err, str(run_dir), "never started")


@pytest.mark.slow
def test_refused_start_does_not_claim_the_run_name(ray_session, clip_root, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    space = tmp_path / "pbt_grid.yaml"
    space.write_text(textwrap.dedent("""\
        params:
          batch_size: {grid: [8, 16]}
        config: {use_amp: false}
        budget: {epochs: 3, epoch_samples: 128, validation_interval: 1}
        scheduler: {type: pbt, perturbation_interval: 1}
        search: {algorithm: grid}
        trials: 1
        include_defaults: false
        """))
    args = ["--space", str(space), "--storage", str(tmp_path / "runs"), "--name", "pbt",
            "--data", str(clip_root)]
    assert run_main(args) == 2
    _one_line(capsys.readouterr().err, "PBT needs at least one sampled")
    assert not (tmp_path / "runs" / "pbt").exists()
    assert run_main(["--storage", str(tmp_path / "runs"), "--resume", "pbt"]) == 2
    _one_line(capsys.readouterr().err, "--resume pbt: no run of that name in")
