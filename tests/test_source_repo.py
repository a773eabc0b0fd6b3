"""The source repository's formats (eden-17-9311/espcn-vespcn, commit 8c6ce1f), both ways.

Every fact here was read from that repository's train.py, test.py, model.py and utils.py and is
written down by us: no code of it is in this repository, and nothing here reads it. Its network
is rebuilt below the way its model.py builds it (`_SourceESPCN`), and its pretrained loader's rule
(keep the keys it knows with their sizes, silently) as `_pretrained_load`.
"""

from __future__ import annotations

import json
import runpy
from pathlib import Path

import pytest
import torch
from torch import nn

from analysis import source_repo
from analysis.export import main as export_main
from analysis.source_repo import TrainList, plan_epochs
from tests import run_fixture as fx
from tests.synthetic import make_split, write_vimeo
from trainable import weights
from trainable.config import TrainConfig
from trainable.errors import ConfigError
from trainable.model import EarlyFusionESPCN

# What the source's train.py reads from `config` (33 names) and what its test.py reads (11).
SOURCE_TRAIN_NAMES = {
    "device", "dataset_type", "train_gt_images_dir", "test_gt_images_dir", "test_lr_images_dir",
    "train_gt_video_dir", "test_gt_video_dir", "test_lr_video_dir", "train_list_file",
    "test_list_file", "num_frames", "gt_image_size", "upscale_factor", "batch_size",
    "num_workers", "model_arch_name", "in_channels", "out_channels", "channels", "model_lr",
    "model_momentum", "model_weight_decay", "model_nesterov", "lr_scheduler_milestones",
    "lr_scheduler_gamma", "loss_weights", "epochs", "exp_name", "pretrained_model_weights_path",
    "resume_model_weights_path", "only_test_y_channel", "train_print_frequency",
    "test_print_frequency"}
SOURCE_TEST_NAMES = {"device", "model_arch_name", "in_channels", "out_channels", "channels",
                     "upscale_factor", "only_test_y_channel", "model_weights_path", "lr_dir",
                     "sr_dir", "gt_dir"}
# Its checkpoint: train.py's save_checkpoint dict; model.ESPCN's state-dict names and shapes (x4,
# 3 frames, channels 64).
SOURCE_CHECKPOINT = ("epoch", "best_psnr", "best_ssim", "state_dict", "optimizer")
SOURCE_TENSORS = {"feature_maps.0.weight": (64, 3, 5, 5), "feature_maps.0.bias": (64,),
                  "feature_maps.2.weight": (32, 64, 3, 3), "feature_maps.2.bias": (32,),
                  "sub_pixel.0.weight": (16, 32, 3, 3), "sub_pixel.0.bias": (16,)}
TRAIN = [f"0000{a}/000{b}" for a in (1, 2, 3, 4) for b in (1, 2)]  # 8 septuplets
TEST = ["00005/0001", "00005/0002"]


class _SourceESPCN(nn.Module):
    """The source's model.ESPCN as its model.py builds it: conv5x5, Tanh, conv3x3, Tanh in
    `feature_maps`; conv3x3 and PixelShuffle in `sub_pixel`; the output clamped in forward()."""

    def __init__(self, in_channels: int = 3, out_channels: int = 1, channels: int = 64,
                 upscale_factor: int = 4) -> None:
        super().__init__()
        self.feature_maps = nn.Sequential(
            nn.Conv2d(in_channels, channels, (5, 5), (1, 1), (2, 2)), nn.Tanh(),
            nn.Conv2d(channels, channels // 2, (3, 3), (1, 1), (1, 1)), nn.Tanh())
        self.sub_pixel = nn.Sequential(
            nn.Conv2d(channels // 2, out_channels * upscale_factor ** 2, (3, 3), (1, 1), (1, 1)),
            nn.PixelShuffle(upscale_factor))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.clamp_(self.sub_pixel(self.feature_maps(x)), 0.0, 1.0)


def _pretrained_load(model: nn.Module, checkpoint: dict) -> int:
    """The source's utils.load_state_dict(load_mode="pretrained"): the tensors whose names and
    sizes it knows, the rest silently left; returns how many it took."""
    own = model.state_dict()
    taken = {k: v for k, v in checkpoint["state_dict"].items()
             if k in own and v.size() == own[k].size()}
    own.update(taken)
    model.load_state_dict(own)
    return len(taken)


@pytest.fixture(scope="module")
def vimeo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_vimeo(tmp_path_factory.mktemp("vimeo"), TRAIN, TEST, size=(64, 64))


def _run(root: Path, vimeo: Path, params: dict, cache: Path) -> Path:
    """A run folder whose one trial trained on ``vimeo`` (4 epochs of 512 samples), with a kept
    checkpoint of epoch 4."""
    run = root / "run"
    fx.write_meta(run)
    fx.write_trial(run, 0, {**fx.DEFAULTS, "data": str(vimeo), "cache_dir": str(cache), **params},
                   [24.0, 25.0, 25.5, 26.0], checkpoint_epochs=(4,))
    return run


def _exported(tmp_path: Path, vimeo: Path, params: dict | None = None, *extra: str
              ) -> tuple[Path, dict, str]:
    run = _run(tmp_path, vimeo, params or {}, tmp_path / "cache")
    out = tmp_path / "export" / "config.py"
    import contextlib
    import io

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert export_main([str(run), "--format", "py", "--out", str(out), *extra]) == 0
    return out, runpy.run_path(str(out)), printed.getvalue()


# --- the format facts -------------------------------------------------------------------------------
def test_the_names_the_source_reads() -> None:
    assert len(SOURCE_TRAIN_NAMES) == 33 and len(SOURCE_TEST_NAMES) == 11
    assert set(source_repo.TRAIN_NAMES) == SOURCE_TRAIN_NAMES
    assert len(source_repo.TRAIN_NAMES) == 33  # no name twice
    assert set(source_repo.TEST_NAMES) == SOURCE_TEST_NAMES


def test_the_checkpoint_keys_and_tensor_names() -> None:
    assert weights.SOURCE_CHECKPOINT_KEYS == SOURCE_CHECKPOINT
    ours = EarlyFusionESPCN(3, 4).state_dict()
    assert list(weights.SOURCE_NAMES) == list(ours)  # every tensor of ours, in order
    assert list(weights.SOURCE_NAMES.values()) == list(SOURCE_TENSORS)
    assert {theirs: tuple(ours[k].shape) for k, theirs in weights.SOURCE_NAMES.items()} \
        == SOURCE_TENSORS
    assert {k: tuple(v.shape) for k, v in _SourceESPCN().state_dict().items()} == SOURCE_TENSORS


# --- export: config.py and .pth.tar ---------------------------------------------------------------
def test_config_py_defines_every_name_with_the_tuned_values(tmp_path: Path, vimeo: Path) -> None:
    tuned = {"model_lr": 0.03, "momentum": 0.8, "nesterov": True, "weight_decay": 2e-4,
             "lr_scheduler_milestones": [0.1, 0.8], "lr_scheduler_gamma": 0.3, "batch_size": 16}
    out, config, printed = _exported(tmp_path, vimeo, tuned, "--no-score")
    assert SOURCE_TRAIN_NAMES | SOURCE_TEST_NAMES <= set(config)
    assert config["device"] == torch.device("cpu")  # CUDA 0 where there is one
    assert (config["model_lr"], config["model_momentum"], config["model_nesterov"],
            config["model_weight_decay"], config["lr_scheduler_gamma"]) == (0.03, 0.8, True,
                                                                            2e-4, 0.3)
    assert (config["gt_image_size"], config["in_channels"], config["num_frames"],
            config["upscale_factor"], config["model_arch_name"]) == (68, 3, 3, 4, "espcn_x4")
    assert config["dataset_type"] == "video" and config["num_workers"] > 0
    assert config["train_gt_video_dir"] == str(vimeo.resolve() / "sequences")
    assert config["train_list_file"] == str(vimeo.resolve() / "sep_trainlist.txt")
    assert config["test_lr_video_dir"] == str(vimeo.resolve() / "sequences_lrx4")
    # 4 x 512 samples; 8 septuplets x 5 windows = 40 samples, 32 per epoch at batch 16.
    assert config["epochs"] == 64 and config["lr_scheduler_milestones"] == [6, 51]
    text = out.read_text()
    assert "2,048 samples, is 64.00 such epochs: epochs = 64" in text
    assert "-> after epoch 6 of 64" in text and "-> after epoch 51 of 64" in text
    assert Path(config["model_weights_path"]) == out.with_name("config.pth.tar").resolve()
    assert config["espcn_tune_config"]["model_lr"] == 0.03
    not_run = [ln for ln in printed.splitlines() if ln.startswith("NOT RUN")]
    assert len(not_run) == 1 and "crops each frame" in not_run[0]  # nothing else to say


def test_what_the_source_does_not_run_is_said_and_printed(tmp_path: Path, vimeo: Path) -> None:
    params = {"optimizer": "adam", "residual": True, "gradient_accumulation_steps": 2,
              "use_amp": False, "lr_schedule": "cosine", "lr_scheduler_milestones": None,
              "lr_scheduler_gamma": None}
    out, config, printed = _exported(tmp_path, vimeo, params, "--no-score")
    said = [ln for ln in out.read_text().splitlines() if ln.startswith("# NOT RUN: ")]
    shown = [ln for ln in printed.splitlines() if ln.startswith("NOT RUN")]
    assert len(said) == len(shown) == 6
    for word in ("optimizer 'adam'", "lr_schedule 'cosine'", "residual",
                 "gradient_accumulation_steps 2", "use_amp false"):
        assert any(word in ln for ln in said) and any(word in ln for ln in shown)
    assert config["lr_scheduler_milestones"] == [6, 51] and config["lr_scheduler_gamma"] == 0.1
    assert not out.with_name("config.pth.tar").exists()  # a residual network cannot run there
    assert config["model_weights_path"] == ""


def test_pth_tar_loads_strictly_and_fully_into_a_source_built_model(tmp_path: Path,
                                                                    vimeo: Path) -> None:
    out, config, printed = _exported(tmp_path, vimeo)
    saved = torch.load(config["model_weights_path"], map_location="cpu", weights_only=True)
    assert set(saved) == set(SOURCE_CHECKPOINT) - {"optimizer"}
    assert {k: tuple(v.shape) for k, v in saved["state_dict"].items()} == SOURCE_TENSORS
    assert saved["epoch"] == 64 and saved["best_psnr"] == 26.0  # 4 x 512 samples, 32 per epoch
    strict = _SourceESPCN()
    strict.load_state_dict(saved["state_dict"], strict=True)  # what its test.py does
    pretrained = _SourceESPCN()
    assert _pretrained_load(pretrained, saved) == 6
    ours = weights.build_model(weights.read_network(out.with_suffix(".pt")).state, 3, 4, False,
                               out)
    x = torch.rand(2, 3, 20, 24)
    with torch.no_grad():
        assert torch.equal(strict.eval()(x), ours.predict(x))
        assert torch.equal(pretrained.eval()(x), ours.predict(x))
    # The test split, ours beside the source's convention, in the header and on stdout.
    scores = [ln for ln in printed.splitlines() if ln.startswith("test: PSNR")]
    assert len(scores) == 2 and "ours" in scores[0] and "source's test.py" in scores[1]
    assert "border crop 4" in scores[1] and "not rounded" in scores[1]
    assert all(s.removeprefix("test: ") in out.read_text() for s in scores)


# --- the conversions ------------------------------------------------------------------------------
def test_epochs_and_milestones_keep_the_budget_and_say_how_they_moved() -> None:
    listed = TrainList("sep_trainlist.txt", 100, 7, True)  # 500 samples, 496 per epoch at 16
    plan = plan_epochs(73_728, listed, 3, 16, [0.54])
    assert (plan.samples_per_epoch, plan.epochs, plan.milestones) == (496, 149, [80])
    assert "-> after epoch 80 of 149" in plan.lines[-1]
    # A drop rounding to 0 moves to 1; one at the end never acts and is left out; two on one
    # epoch both act there.
    plan = plan_epochs(1_000, TrainList("l", 40, 7, True), 3, 20, [0.01, 0.02, 0.97])
    assert plan.epochs == 5 and plan.milestones == [1, 1]
    assert any("left out" in ln for ln in plan.lines)
    assert any("act together" in ln for ln in plan.lines)
    # Fewer samples than one batch: drop_last trains nothing, and the plan says so.
    assert "trains nothing" in plan_epochs(100, TrainList("l", 1, 7, True), 3, 16, []).lines[0]
    # Five frames per window leave 3 windows of a septuplet.
    assert plan_epochs(300, TrainList("l", 10, 7, True), 5, 10, []).samples_per_epoch == 30


def test_other_data_gets_the_official_list_and_the_source_paths() -> None:
    cfg = TrainConfig(epochs=10, epoch_samples=4096).to_dict()
    paths = source_repo.data_paths(cfg)
    assert not paths.train_list.known and paths.train_list.sequences == 64_612
    assert paths.values["train_list_file"] == "./data/vimeo90k/sep_trainlist.txt"
    assert "builtin" in paths.comments["train_list_file"]


# --- source checkpoints here ------------------------------------------------------------------------
def _source_file(path: Path, frames: int = 3, channels: int = 64) -> _SourceESPCN:
    torch.manual_seed(1)
    model = _SourceESPCN(frames, 1, channels)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    torch.save({"epoch": 40, "best_psnr": 29.2, "best_ssim": 0.82,
                "state_dict": model.state_dict(), "optimizer": optimizer.state_dict()}, path)
    return model


def test_a_source_checkpoint_reads_as_the_same_network(tmp_path: Path) -> None:
    theirs = _source_file(tmp_path / "g_best.pth.tar")
    network = weights.read_network(tmp_path / "g_best.pth.tar")
    assert network.from_source and list(network.state) == list(weights.SOURCE_NAMES)
    ours = weights.model_from_file(tmp_path / "g_best.pth.tar", None)  # no config needed
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(theirs.eval()(x), ours.predict(x))


@pytest.mark.parametrize(("frames", "channels", "layer", "there", "needed"), [
    (5, 64, "body.0.weight", "64x5x5x5", "64x3x5x5"),
    (3, 32, "body.0.weight", "32x3x5x5", "64x3x5x5"),
])
def test_a_source_checkpoint_of_another_shape_names_the_layer(
        tmp_path: Path, frames: int, channels: int, layer: str, there: str, needed: str) -> None:
    _source_file(tmp_path / "g.pth.tar", frames, channels)
    with pytest.raises(weights.WeightsError) as e:
        weights.initial_weights(tmp_path / "g.pth.tar", 3, 4, False)
    message = str(e.value)
    assert message.count("\n") == 0 and layer in message and "feature_maps.0.weight" in message
    assert f"is {there} in the file, but the model needs {needed}" in message


@pytest.mark.parametrize("command", ["upscale", "score"])
def test_commands_take_a_source_checkpoint_and_refuse_another_shape(
        tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str]) -> None:
    from tests.synthetic import write_clip_folders
    from trainable.score import main as score_main
    from trainable.upscale import main as upscale_main

    _source_file(tmp_path / "g_best.pth.tar")
    _source_file(tmp_path / "five.pth.tar", 5)
    (tmp_path / "c.yaml").write_text("frames: 3\n")
    clip = write_clip_folders(tmp_path / "clips", clips=1, t=3, size=(32, 32)) / "clip00"

    def run(w: str, *config: str) -> int:
        if command == "upscale":
            return upscale_main(["--weights", str(tmp_path / w), *config, str(clip), "--out",
                                 str(tmp_path / f"up-{w.split('.')[0]}")])
        return score_main(["--weights", str(tmp_path / w), *config, "--data", str(clip.parent),
                           "--split", "val"])

    if command == "upscale":  # scoring needs a split of 3 clips: tested through export above
        assert run("g_best.pth.tar") == 0
    capsys.readouterr()
    assert run("five.pth.tar", "--config", str(tmp_path / "c.yaml")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is 64x5x5x5 in the file, but the model needs 64x3x5x5" in err


# --- init_weights: training starts from given weights -------------------------------------------------
def test_training_starts_from_init_weights(tmp_path: Path) -> None:
    from trainable.fused import FusedTrainer
    from trainable.loop import Trainer

    theirs = _source_file(tmp_path / "g_best.pth.tar")
    expected = weights.read_network(tmp_path / "g_best.pth.tar").state
    cfg = TrainConfig(init_weights=str(tmp_path / "g_best.pth.tar"), epochs=1, epoch_samples=16,
                      validation_interval=1, use_amp=False, device="cpu", patch_size=8)
    train, val = make_split("train"), make_split("val", clips=1, t=3)
    trainer = Trainer(cfg, train, val)
    assert all(torch.equal(trainer.model.state_dict()[k], v) for k, v in expected.items())
    group = FusedTrainer(cfg, train, val, 2)
    group.add(0, cfg)
    group.add(1, cfg.replace(init_weights=None))
    member = group.member_state(0)["model"]
    assert all(torch.equal(member[k], v) for k, v in expected.items())
    assert not torch.equal(group.member_state(1)["model"]["body.0.weight"],
                           expected["body.0.weight"])
    del theirs


def test_a_search_fine_tunes_every_trial_from_init_weights(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from tune.space import load_space

    _source_file(tmp_path / "g_best.pth.tar")
    _source_file(tmp_path / "five.pth.tar", 5)
    space = tmp_path / "ft.yaml"
    space.write_text("params:\n  model_lr: {loguniform: [1.0e-4, 1.0e-2]}\n"
                     "config:\n  init_weights: g_best.pth.tar\n")
    monkeypatch.chdir(tmp_path)
    spec = load_space(space)
    absolute = str((tmp_path / "g_best.pth.tar").resolve())
    assert spec.base.init_weights == absolute  # trials run in another working directory
    assert spec.trial_config({"model_lr": 1e-3}).init_weights == absolute
    assert spec.base.source_defaults().init_weights == absolute  # the reference fine-tunes too
    space.write_text(space.read_text().replace("g_best", "five"))
    with pytest.raises(ConfigError, match=r"config.init_weights.*64x5x5x5 in the file"):
        load_space(space)
    space.write_text("params:\n  init_weights: {choice: [a.pt, b.pt]}\n")
    with pytest.raises(ConfigError, match="init_weights"):
        load_space(space)


def test_nesterov_is_sgds_and_reaches_the_optimizer() -> None:
    from trainable.loop import make_optimizer

    cfg = TrainConfig(nesterov=True)
    opt = make_optimizer(cfg, EarlyFusionESPCN().parameters(), torch.device("cpu"))
    assert opt.param_groups[0]["nesterov"] is True
    with pytest.raises(ConfigError, match="nesterov"):
        TrainConfig(nesterov=True, optimizer="adam")
    with pytest.raises(ConfigError, match="nesterov"):
        TrainConfig(nesterov=True, momentum=0.0)


def test_export_writes_json_free_of_the_source_format(tmp_path: Path, vimeo: Path) -> None:
    """Only the py format writes a .pth.tar: the others stay as they were."""
    run = _run(tmp_path, vimeo, {}, tmp_path / "cache")
    assert export_main([str(run), "--format", "json"]) == 0
    assert not list((run / "export").glob("*.pth.tar"))
    assert json.loads(next((run / "export").glob("*.json")).read_text())["config"]["data"] \
        == str(vimeo)


@pytest.mark.slow
def test_a_real_search_fine_tunes_every_trial_from_a_source_checkpoint(
        ray_session, clip_root: Path, tmp_path: Path) -> None:
    # A user's g_best.pth.tar under `config:` of a space: every trial on Ray (another working
    # directory, another process) starts from it. At an LR of 1e-9 a trial's first validation
    # is the checkpoint's own score, far from a fresh network's.
    from analysis.tables import load_run
    from trainable.config import DataSpec
    from trainable.evaluate import Convention, model_predictor, score_conventions
    from trainable.store import open_split
    from tune.run import main

    checkpoint = tmp_path / "g_best.pth.tar"
    theirs = _source_file(checkpoint)
    with torch.no_grad():  # a checkpoint that predicts mid-grey: unlike any fresh network
        theirs.sub_pixel[0].weight.zero_()
        theirs.sub_pixel[0].bias.fill_(0.5)
    saved = torch.load(checkpoint, weights_only=True)
    torch.save({**saved, "state_dict": theirs.state_dict()}, checkpoint)
    val = open_split(DataSpec(str(clip_root)), "val")

    def score(model: nn.Module) -> float:
        return score_conventions(model_predictor(model.eval()), val, frames=3,
                                 device=torch.device("cpu"), conventions=(Convention(0),))[0].psnr

    start = score(weights.model_from_file(checkpoint, None))
    torch.manual_seed(0)
    assert abs(score(EarlyFusionESPCN()) - start) > 0.5
    space = tmp_path / "finetune.yaml"
    space.write_text(
        "params:\n  model_lr: {loguniform: [1.0e-9, 2.0e-9]}\n"
        f"config: {{init_weights: {checkpoint}, batch_size: 8, use_amp: false}}\n"
        "budget: {epochs: 1, epoch_samples: 64, validation_interval: 1}\n"
        "search: {n_startup_trials: 2}\ntrials: 2\ninclude_defaults: false\n")
    assert main(["--space", str(space), "--storage", str(tmp_path), "--name", "ft",
                 "--data", str(clip_root)]) == 0
    trials = load_run(tmp_path / "ft").trials
    assert len(trials) == 2 and not trials["error"].any()
    assert all(abs(p - start) < 0.01 for p in trials["best_psnr"]), (list(trials["best_psnr"]), start)
