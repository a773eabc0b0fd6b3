"""The result row: one typed form of a result.json line, from the trainer to analysis."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import pytest

from analysis import run_folder
from analysis.result_row import ResultRow, rows
from trainable.result import ValidationResult

RESULT = ValidationResult(
    epoch=6, samples=3072, max_epochs=18, psnr=29.7, ssim=0.86, bicubic_psnr=28.8,
    bicubic_ssim=0.84, gain_db=0.9, best_psnr=29.8, best_epoch=3, loss=0.0021, lr=4.3e-3,
    samples_per_s=812.5, steps_per_s=50.8, data_time_share=0.07, status="running",
    psnr_frames=(29.1, 30.2, 29.8))


def _every_field_set() -> ResultRow:
    return ResultRow.of(RESULT, trial_id="4f99c683", training_iteration=2, timestamp=1.7e9,
                        time_total_s=41.5, trial_config={"model_lr": 4.3e-3, "epochs": 18},
                        reason="why not")


def test_a_row_round_trips_through_json_with_every_field() -> None:
    row = _every_field_set()
    # Every field differs from its default: a reader that dropped one would be seen.
    defaults = ResultRow.from_json({"epoch": 0})
    assert defaults is not None
    for f in dataclasses.fields(ResultRow):
        assert getattr(row, f.name) != getattr(defaults, f.name), f.name
    assert ResultRow.from_json(json.loads(json.dumps(row.to_json()))) == row


def test_the_trainer_result_is_the_row_without_its_envelope() -> None:
    row = ResultRow.of(RESULT)
    assert {k: v for k, v in row.to_json().items()} == RESULT.to_dict()
    assert ResultRow.from_json(RESULT.to_dict()) == row


def test_non_finite_numbers_are_written_as_null_and_read_as_nan() -> None:
    row = dataclasses.replace(ResultRow.of(RESULT), loss=math.inf, lr=math.nan)
    line = row.to_json()
    assert line["loss"] is None and line["lr"] is None
    back = ResultRow.from_json(json.loads(json.dumps(line)))
    assert back is not None and math.isnan(back.loss) and math.isnan(back.lr)


def test_a_foreign_or_damaged_line_is_read_without_a_crash() -> None:
    assert ResultRow.from_json({"psnr": 30.0}) is None  # no epoch: no row
    assert ResultRow.from_json({"epoch": "x"}) is None
    assert ResultRow.from_json({"epoch": True}) is None
    row = ResultRow.from_json({"epoch": 3.0, "psnr": "29.5", "ssim": [1], "status": 7,
                               "psnr_frames": [29.0, None], "trial_config": "no",
                               "training_iteration": "two", "hostname": "node-1"})
    assert row is not None
    assert (row.epoch, row.psnr, row.status, row.psnr_frames, row.trial_config,
            row.training_iteration) == (3, 29.5, "", (), None, None)
    assert math.isnan(row.ssim) and row.samples == 0


def test_an_infeasible_row_is_no_validation_and_carries_its_reason() -> None:
    row = ResultRow.infeasible({"epochs": 12, "batch_size": 64}, "CUDA out of memory", psnr=0.0,
                               ssim=0.0)
    assert not row.is_validation and row.is_final
    assert (row.epoch, row.max_epochs, row.samples, row.psnr, row.reason) == (
        12, 12, 0, 0.0, "CUDA out of memory")
    assert ResultRow.from_json(row.to_json()) == row
    assert ResultRow.of(RESULT).is_validation and not ResultRow.of(RESULT).is_final


def test_the_run_folder_writes_and_reads_rows(tmp_path: Path) -> None:
    row = _every_field_set()
    run_folder.write_results(tmp_path, [row, dataclasses.replace(row, epoch=7)])
    with open(tmp_path / run_folder.RESULT_FILE, "a") as f:
        f.write('{"epoch": 8, "psnr": 30')  # a line being written when the run was killed
    assert [r.epoch for r in run_folder.read_results(tmp_path)] == [6, 7]
    assert run_folder.read_results(tmp_path)[0] == row


@pytest.mark.parametrize("lines, epochs", [([{"epoch": 1}, {"x": 1}, {"epoch": 2}], [1, 2]),
                                           ([], [])])
def test_rows_skips_lines_without_an_epoch(lines, epochs) -> None:
    assert [r.epoch for r in rows(lines)] == epochs
