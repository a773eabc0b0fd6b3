"""python -m trainable: one run end to end on small clips, and bad input as clear errors."""

from __future__ import annotations

import json

import pytest
import torch

from trainable.__main__ import main
from trainable.model import EarlyFusionESPCN

TINY = ["--set", "epochs=2", "--set", "epoch_samples=128", "--set", "batch_size=8",
        "--set", "validation_interval=1", "--set", "use_amp=false", "--set", "num_threads=1"]


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ESPCN_TUNE_CACHE", str(tmp_path / "cache"))


def test_full_run_writes_outputs_and_scores_val_and_test(clip_root, tmp_path, cache, capsys,
                                                         caplog, monkeypatch):
    from trainable import sources

    monkeypatch.setattr(sources, "_logged", set())  # what this process has logged once already
    out = tmp_path / "out"
    with caplog.at_level("INFO", logger="trainable"):
        assert main(["--set", f"data={clip_root}", *TINY, "--out", str(out)]) == 0
    # The data's long description once, though train, val and test were each built and opened.
    assert sum(f"clip folders {clip_root} (" in r.getMessage() for r in caplog.records) == 1
    printed = capsys.readouterr().out
    assert "bicubic" in printed and "test:" in printed and "border crop 0" in printed
    assert f"upscale a video:  python -m trainable.upscale --weights {out / 'model.pt'}" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["samples"] == 256
    assert summary["val"]["bicubic_psnr"] > 20 and summary["test"]["frames"] > 0
    model = EarlyFusionESPCN()
    model.load_state_dict(torch.load(out / "model.pt", weights_only=True))
    assert list((out / "tb").glob("events.out.tfevents*"))
    # The checkpoint resumes: one more epoch on top of the two done.
    more = tmp_path / "more"
    assert main(["--set", f"data={clip_root}", *TINY, "--set", "epochs=3", "--out", str(more),
                 "--resume", str(out / "checkpoint.pt"), "--no-test",
                 "--allow-budget-change"]) == 0
    assert json.loads((more / "summary.json").read_text())["samples"] == 384


def test_bad_key_in_config_file_is_exit_2_naming_file_and_key(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("model_lr: 0.01\nlearning_rate: 0.1\n")
    assert main(["--config", str(cfg)]) == 2
    err = capsys.readouterr().err
    assert str(cfg) in err and "'learning_rate'" in err and "valid keys" in err


def test_misspelt_key_in_config_file_suggests_the_near_one(tmp_path, capsys):
    cfg = tmp_path / "typo.yaml"
    cfg.write_text("model_lr: 0.01\nbatchsize: 8\n")
    assert main(["--config", str(cfg), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{cfg}: unknown key 'batchsize' (did you mean `batch_size`?); valid keys" in err
    assert not (tmp_path / "o").exists()  # refused before anything is written


def test_misspelt_key_in_set_suggests_the_near_one(tmp_path, capsys):
    assert main(["--set", "epoch=1", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "defaults with --set: unknown key 'epoch' (did you mean `epochs`?)" in err
    assert not (tmp_path / "o").exists()


def test_invalid_yaml_names_the_line(tmp_path, capsys):
    cfg = tmp_path / "broken.yaml"
    cfg.write_text("model_lr: 0.01\nbatch_size: [16\n")
    assert main(["--config", str(cfg)]) == 2
    assert f"{cfg}:3: invalid YAML" in capsys.readouterr().err  # the list is still open at 3


def test_missing_config_file(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_missing_data_folder(tmp_path, cache, capsys):
    assert main(["--set", f"data={tmp_path / 'no-such-data'}", "--out", str(tmp_path / "o")]) == 2
    assert "no-such-data" in capsys.readouterr().err


def test_corrupt_frame_names_the_file(clip_root, tmp_path, cache, capsys):
    import shutil

    data = tmp_path / "clips"
    shutil.copytree(clip_root, data)
    bad = data / "clip02" / "0003.png"
    bad.write_bytes(b"not a png")
    assert main(["--set", f"data={data}", *TINY, "--out", str(tmp_path / "o")]) == 2
    assert str(bad) in capsys.readouterr().err


def test_resume_checks_the_config_and_always_writes_model_and_scores(clip_root, tmp_path, cache,
                                                                     capsys):
    import yaml

    first = tmp_path / "first"
    assert main(["--set", f"data={clip_root}", *TINY, "--out", str(first), "--no-test"]) == 0
    ckpt = str(first / "checkpoint.pt")
    capsys.readouterr()

    # A finished run resumed into a new folder: no new best can appear, model.pt is still there.
    again = tmp_path / "again"
    assert main(["--set", f"data={clip_root}", *TINY, "--set", "num_threads=2", "--out",
                 str(again), "--resume", ckpt, "--no-test"]) == 0
    summary = json.loads((again / "summary.json").read_text())
    assert (again / "model.pt").read_bytes() == (first / "model.pt").read_bytes()
    assert summary["val"]["psnr"] == json.loads((first / "summary.json").read_text())["val"]["psnr"]

    # Anything but run-only settings changed: refused, listing the keys; nothing written.
    refused = tmp_path / "refused"
    assert main(["--set", f"data={clip_root}", *TINY, "--set", "model_lr=0.5",
                 "--set", "batch_size=16", "--out", str(refused), "--resume", ckpt]) == 2
    err = capsys.readouterr().err
    assert "model_lr: 0.01 -> 0.5" in err and "batch_size: 8 -> 16" in err
    assert not refused.exists()

    # A budget change only when asked; the milestones keep their sample counts.
    assert main(["--set", f"data={clip_root}", *TINY, "--set", "epochs=4", "--out",
                 str(refused), "--resume", ckpt]) == 2
    assert "--allow-budget-change" in capsys.readouterr().err
    longer = tmp_path / "longer"
    assert main(["--set", f"data={clip_root}", *TINY, "--set", "epochs=4", "--out", str(longer),
                 "--resume", ckpt, "--no-test", "--allow-budget-change"]) == 0
    saved = yaml.safe_load((longer / "config.yaml").read_text())
    assert saved["lr_scheduler_milestones"] == pytest.approx([0.05, 0.4])


def test_train_returns_what_summary_json_holds_and_a_reproducing_command(clip_root, tmp_path,
                                                                        cache):
    from trainable import Summary, train
    from trainable.config_file import load_config

    cfg = load_config(None, [f"data={clip_root}", *TINY[1::2]])
    out = tmp_path / "lib"
    summary = train(cfg, out, no_test=True)
    assert isinstance(summary, Summary) and summary.test is None and summary.val is not None
    assert json.loads((out / "summary.json").read_text()) == summary.to_dict()
    assert summary.val.gain_db == summary.val.psnr - summary.val.bicubic_psnr
    command = (out / "command.txt").read_text().split()
    assert command[:4] == ["python", "-m", "trainable", "--config"] and "--no-test" in command


def test_test_scoring_is_bounded_and_says_it_sampled(tmp_path, cache, capsys):
    """Issue 25: at most `test_clips` test clips, evenly spread, and "sampled" wherever the score
    is shown; val is scored whole and says "full"."""
    from synthetic import write_clip_folders

    root = tmp_path / "presplit"
    write_clip_folders(root / "train", clips=3, t=3, size=(80, 80))
    write_clip_folders(root / "val", clips=1, t=3, size=(80, 80), seed=10)
    write_clip_folders(root / "test", clips=5, t=3, size=(80, 80), seed=20)
    out = tmp_path / "out"
    assert main(["--set", f"data={root}", *TINY, "--set", "test_clips=2", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["test"]["clips"] == 2 and summary["test"]["frames"] == 2 * 3
    assert summary["test"]["scope"] == "sampled 2 of 5 clips"
    assert summary["val"]["scope"] == "full" and summary["val"]["clips"] == 1
    printed = capsys.readouterr().out
    assert "(6 frames, sampled 2 of 5 clips)" in printed and "(3 frames, full)" in printed
