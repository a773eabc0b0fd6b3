"""What a trial's TensorBoard event files hold (tune.ray_edge.loggers, Ray's own TBX logger):
steps in training samples, the config once as text, the searched values as HParams in the
user's form (issue 27, item 5). Written through `FolderLogger`, the same logger a search's
trials and its reference run write through, without a Ray session."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.record import ParamRange
from analysis.result_row import ResultRow
from tests import run_fixture as fx
from tune.ray_edge.loggers import FolderLogger

PARAMS = (ParamRange("model_lr", "loguniform", 1e-4, 1e-1),
          ParamRange("lr_scheduler_milestones", "milestones", 0.05, 0.95, count=(1, 2)))
EPOCH_SAMPLES = 512


def events(folder: Path) -> dict[str, dict]:
    """Each tag of the event files in ``folder``: its plugin, its steps, and (text, HParams) its
    values."""
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from tensorboard.plugins.hparams import plugin_data_pb2

    out: dict[str, dict] = {}
    for f in sorted(folder.glob("events.out.tfevents*")):
        for event in EventFileLoader(str(f)).Load():
            for v in event.summary.value:
                plugin = v.metadata.plugin_data.plugin_name or "histograms"
                tag = out.setdefault(v.tag, {"plugin": plugin, "steps": [], "values": []})
                tag["steps"].append(event.step)
                if plugin == "text":
                    tag["values"].append(b"".join(v.tensor.string_val).decode())
                elif plugin == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(
                        v.metadata.plugin_data.content)
                    if data.HasField("session_start_info"):
                        tag["values"].append({k: str(getattr(x, x.WhichOneof("kind")))
                                              for k, x in data.session_start_info.hparams.items()})
    return out


@pytest.fixture
def logged(tmp_path: Path) -> dict[str, dict]:
    config = fx.trial_config({"model_lr": 0.02, "lr_scheduler_milestones": [0.3, 0.7]})
    logger = FolderLogger(PARAMS, tmp_path, {"model_lr": 0.02,
                                             "lr_scheduler_milestones": [0.3, 0.7]})
    for i, epoch in enumerate((2, 4, 6), 1):  # validation every 2 epochs: iterations 1, 2, 3
        logger.result(ResultRow(
            epoch=epoch, samples=epoch * EPOCH_SAMPLES, max_epochs=6, psnr=25.0 + epoch,
            ssim=0.8, bicubic_psnr=24.0, bicubic_ssim=0.7, gain_db=1.0 + epoch,
            best_psnr=25.0 + epoch, best_epoch=epoch, loss=0.01, lr=0.02, samples_per_s=100.0,
            steps_per_s=10.0, data_time_share=0.1, status="completed" if epoch == 6 else "running",
            psnr_frames=(25.0, 26.0, 27.0), trial_id="t", training_iteration=i,
            trial_config=config))
    logger.end()
    return events(tmp_path)


def test_curves_are_at_the_samples_trained(logged: dict[str, dict]) -> None:
    """Not at Ray's training_iteration (1, 2, 3), which differs from the epoch and between
    trials validating at other intervals."""
    samples = [2 * EPOCH_SAMPLES, 4 * EPOCH_SAMPLES, 6 * EPOCH_SAMPLES]
    for tag in ("ray/tune/psnr", "ray/tune/gain_db", "ray/tune/epoch"):
        assert logged[tag]["plugin"] == "scalars" and logged[tag]["steps"] == samples


def test_the_config_is_text_once_not_a_curve_per_key(logged: dict[str, dict]) -> None:
    assert not [t for t, v in logged.items() if "trial_config" in t and v["plugin"] != "text"]
    text = logged["trial_config/text_summary"]
    assert text["plugin"] == "text" and len(text["values"]) == 1
    assert "    model_lr: 0.02" in text["values"][0]
    assert "lr_scheduler_milestones: [0.3, 0.7]" in text["values"][0]


def test_milestones_are_hparams_text_and_scalars_not_a_histogram(logged: dict[str, dict]) -> None:
    assert not [t for t, v in logged.items() if "milestones" in t and v["plugin"] == "histograms"]
    (hparams,) = [v for t in logged.values() if t["plugin"] == "hparams" for v in t["values"]]
    assert hparams["lr_scheduler_milestones"] == "[0.3, 0.7]"
    assert hparams["lr_scheduler_milestones/count"] == "2.0"
    assert hparams["lr_scheduler_milestones/first"] == "0.3"
    assert hparams["lr_scheduler_milestones/last"] == "0.7"
    assert hparams["model_lr"] == "0.02"
