"""The report's pictures: five ways of one crop, labelled with PSNRs, embedded in index.html."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch
from synthetic import make_split

from analysis import pictures
from analysis.report import write_report
from analysis.tables import load_run
from tests import run_fixture as fx


@pytest.fixture
def small_test_split(monkeypatch: pytest.MonkeyPatch):
    split = make_split("test", clips=2, t=5, hr_size=(96, 128), seed=4, centres=(2,))
    monkeypatch.setattr(pictures, "open_test_split", lambda config: split)
    return split


def test_report_shows_the_crop_with_winner_and_bicubic_psnr_per_frame(
        tmp_path: Path, small_test_split) -> None:
    run = load_run(fx.write_small_run(tmp_path))
    page = write_report(run, tmp_path / "report").read_text()
    section = page.split("<h2 id='pictures'>Pictures</h2>", 1)[1].split("<h2>", 1)[0]
    assert "data:image/png;base64," in section  # embedded: the page stays one offline file
    assert (tmp_path / "report" / "pictures.png").is_file()
    assert "where the winner and bicubic differ most" in section
    heads = re.findall(r"<th>([^<]*)</th>", section)
    assert heads == ["frame", "LR (nearest)", "bicubic", "defaults", "winner"]
    rows = re.findall(r"<tr><td>([^<]*)</td>((?:<td>[^<]*</td>)+)</tr>", section)
    assert [r[0] for r in rows] == ["clip0 frame 2", "clip1 frame 2"]  # 2 clips x 1 target
    again = pictures.draw(run, fx.WINNER, tmp_path / "again.png", data=small_test_split)
    for k, (_, cells) in enumerate(rows):
        values = [float(v) for v in re.findall(r"<td>([\d.]+) dB</td>", cells)]
        assert values[1] == pytest.approx(again.psnr["bicubic"][k], abs=0.005)
        assert values[3] == pytest.approx(again.psnr["winner"][k], abs=0.005)
    # Bicubic of a smooth field is far better than the fixture's untrained weights.
    assert again.psnr["bicubic"][0] > again.psnr["winner"][0] + 10


def test_without_a_defaults_checkpoint_the_panel_is_left_out_with_a_note(
        tmp_path: Path, small_test_split) -> None:
    run_dir = fx.write_small_run(tmp_path)
    for ckpt in fx.trial_dir(run_dir, 0).glob("checkpoint_*"):
        shutil.rmtree(ckpt)
    p = pictures.draw(load_run(run_dir), fx.WINNER, tmp_path / "p.png")
    assert p.path is not None and "defaults" not in p.psnr and set(p.psnr) >= {"bicubic", "winner"}
    assert any("no defaults panel" in n for n in p.notes)
    page = write_report(load_run(run_dir), tmp_path / "report").read_text()
    assert "no defaults panel" in page


def test_a_winner_without_weights_gets_a_note_not_a_crash(tmp_path: Path, small_test_split) -> None:
    run = load_run(fx.write_small_run(tmp_path))
    p = pictures.draw(run, "3f2a1002", tmp_path / "p.png")  # stopped at rung 1, no checkpoint
    assert p.path is None and "kept no checkpoint" in p.notes[0]


def test_the_crop_is_where_winner_and_bicubic_differ_most() -> None:
    bicubic = torch.full((3, 200, 240), 100, dtype=torch.uint8)
    winner = bicubic.clone()
    winner[:, 120:140, 160:180] = 200  # the only place they differ
    top, left, h, w = pictures._crop(winner, bicubic, 4)
    assert (h, w) == (pictures.CROP, pictures.CROP)
    assert top <= 120 and 140 <= top + h and left <= 160 and 180 <= left + w
    assert top % 4 == 0 and left % 4 == 0  # on the LR grid
