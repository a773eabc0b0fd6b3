"""analysis and analysis.export on the folder a REAL search wrote (the session's ``smoke_run``:
search_spaces/smoke.yaml, 6 trials, ASHA, TPE, on the ``clip_root`` clips).

The synthetic run of tests/run_fixture.py copies the shape of a run folder; this checks the same
code against what Ray and tune.run actually leave on disk. Every output goes to a temporary
folder: the run folder is shared with tests/test_search_run.py and is only read here.

Expectations are computed from the raw files, independently of analysis.tables: the results table
holds one row per validation report, where a report is a result.json line with an ``epoch`` and a
``psnr`` that is not ``status: infeasible``, and a repeated (trial, epoch) counts once (the
analysis keeps its last line: a resumed trial, Ray's duplicate final result).
"""

from __future__ import annotations

import ast
import contextlib
import io
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis.__main__ import main as analysis_main
from analysis.export import main as export_main
from analysis.run_folder import find_checkpoints
from trainable.config_file import load_config
from trainable.model import EarlyFusionESPCN
from trainable.weights import load_file as load_state_file

pytestmark = pytest.mark.slow

PNGS = ["best_so_far.png", "importance.png", "learning_curves.png", "parallel_coordinates.png",
        "pictures.png", "psnr_vs_params.png"]


def _lines(trial_dir: Path) -> list[dict]:
    path = trial_dir / "result.json"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _raw(run: Path) -> dict[str, tuple[Path, list[dict]]]:
    """trial id -> (folder, result.json lines), straight from the files."""
    out = {}
    for d in run.iterdir():
        if d.is_dir() and (d / "params.json").exists() and d.name != "reference":
            lines = _lines(d)
            out[lines[0]["trial_id"]] = (d, lines)
    return out


def _validations(lines: list[dict]) -> dict[int, dict]:
    """The dedup rule: epoch -> the last validation line of that epoch (infeasible ones out)."""
    by_epoch: dict[int, dict] = {}
    for r in lines:
        if r.get("epoch") is not None and "psnr" in r and r.get("status") != "infeasible":
            by_epoch[int(r["epoch"])] = r
    return by_epoch


def _best_trial(raw: dict[str, tuple[Path, list[dict]]]) -> str:
    """The highest validated PSNR of any trial that did not error (ties: the earlier epoch)."""
    def key(tid: str) -> tuple[float, int]:
        best = max(_validations(raw[tid][1]).values(), key=lambda r: (r["psnr"], -r["epoch"]))
        return best["psnr"], -best["epoch"]

    return max((tid for tid, (d, _) in raw.items() if not (d / "error.txt").exists()), key=key)


@pytest.fixture(scope="module")
def analysed(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory):
    """``python -m analysis`` on the real run, once; (exit code, stdout, tables dir, report dir)."""
    out = tmp_path_factory.mktemp("analysis-real")
    tables, report = out / "tables", out / "report"
    buf = io.StringIO()  # capsys is function-scoped: capture by hand
    with contextlib.redirect_stdout(buf):
        rc = analysis_main([str(smoke_run), "--tables-dir", str(tables),
                            "--report-dir", str(report)])
    return rc, buf.getvalue(), tables, report


def test_leaderboard_of_the_real_run(smoke_run: Path, analysed) -> None:
    rc, stdout, _, _ = analysed
    assert rc == 0, stdout
    raw = _raw(smoke_run)
    assert len(raw) == 6
    rows = [ln.split() for ln in stdout.splitlines() if ln.strip()[:1].isdigit()
            and ln.split()[1] in raw]
    ref = [ln.split() for ln in stdout.splitlines() if ln.strip()[:1].isdigit()
           and ln.split()[1] == "reference"]
    # The six trials and the reference run beside them, ranked together; the winner is a trial.
    assert sorted(int(r[0]) for r in rows + ref) == list(range(1, 8))
    assert {r[1] for r in rows} == set(raw)
    assert rows[0][1] == _best_trial(raw)  # computed from the raw lines
    assert "stopped by ASHA" in stdout
    assert len(ref) == 1 and "[reference: source defaults]" in " ".join(ref[0])
    assert "6 trials and the reference run" in stdout
    meta = json.loads((smoke_run / "espcn_tune.record").read_text())
    assert meta["evaluation"] in stdout


def test_tables_match_the_result_files(smoke_run: Path, analysed) -> None:
    _, _, tables, _ = analysed
    raw = _raw(smoke_run)
    results = pd.read_parquet(tables / "results.parquet")
    results = results[results["trial"] != "reference"]  # its own folder, checked elsewhere
    trials = pd.read_parquet(tables / "trials.parquet")
    assert list(trials.loc[trials["is_reference"], "trial"]) == ["reference"]
    trials = trials[~trials["is_reference"]]
    assert len(trials) == 6 and set(trials["trial"]) == set(raw)
    expected = {tid: _validations(lines) for tid, (_, lines) in raw.items()}
    assert len(results) == sum(len(v) for v in expected.values())
    # In a clean run every result.json line is a validation of a new epoch: nothing was dropped.
    assert len(results) == sum(len(lines) for _, lines in raw.values())
    for tid, by_epoch in expected.items():
        mine = results[results["trial"] == tid].sort_values("epoch")
        assert list(mine["epoch"]) == sorted(by_epoch)
        assert list(mine["psnr"]) == pytest.approx([by_epoch[e]["psnr"] for e in sorted(by_epoch)])
        row = trials[trials["trial"] == tid].iloc[0]
        assert row["n_reports"] == len(by_epoch)
        assert row["epochs_trained"] == max(by_epoch)
        assert row["best_psnr"] == pytest.approx(max(r["psnr"] for r in by_epoch.values()))
    assert trials["outcome"].str.startswith("stopped by ASHA").any()
    assert (trials["outcome"] == "completed").any()


def test_report_and_figures_exist(analysed) -> None:
    _, _, _, report = analysed
    html = (report / "index.html").read_text()
    assert sorted(p.name for p in report.glob("*.png")) == PNGS
    for name in PNGS:
        assert (report / name).stat().st_size > 1000 and f"href='{name}'" in html


def test_exported_yaml_and_weights_train_and_reproduce_the_score(
        smoke_run: Path, analysed, tmp_path: Path) -> None:
    from trainable.evaluate import score_model
    from trainable.store import open_split

    out = tmp_path / "winner.yaml"
    assert export_main([str(smoke_run), "--out", str(out)]) == 0
    cfg = load_config(out, [])  # what `python -m trainable --config winner.yaml` does first
    _, _, tables, _ = analysed
    trials = pd.read_parquet(tables / "trials.parquet")
    winner = trials[trials["trial"] == _best_trial(_raw(smoke_run))].iloc[0]
    # The trial's config, but for its Ray share of the cores (issue 27: left to torch).
    assert cfg.num_threads == 0
    assert cfg.to_dict() == {**json.loads(winner["config"]), "num_threads": 0}
    model = EarlyFusionESPCN(cfg.frames, cfg.scale, cfg.residual)
    state = torch.load(out.with_suffix(".pt"), weights_only=True)
    model.load_state_dict(state, strict=True)
    # The weights are the trial's best checkpoint, and they score what the leaderboard says.
    best_ckpt = max(find_checkpoints(smoke_run / winner["dir"]), key=lambda c: c.psnr)
    kept = load_state_file(best_ckpt.path / "trainer.pt")["model"]
    assert all(torch.equal(state[k], kept[k].cpu()) for k in kept)
    val = open_split(cfg.data_spec, "val")
    score = score_model(model, val, frames=cfg.frames, crop_border=cfg.crop_border,
                        device=torch.device("cpu"))
    assert math.isclose(score.psnr, winner["best_psnr"], abs_tol=1e-3)


# The source repository's config.py preamble, which the exported drop-in repeats: the only code
# in the file beside literal assignments.
SOURCE_PREAMBLE = {ast.dump(ast.parse(line).body[0]) for line in (
    "import random", "import numpy as np", "import torch", "from torch.backends import cudnn",
    "random.seed(0)", "torch.manual_seed(0)", "np.random.seed(0)",
    'device = torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu")',
    "cudnn.benchmark = True", "cudnn.enabled = True",
    "torch.backends.cuda.matmul.allow_tf32 = True", "torch.backends.cudnn.allow_tf32 = True")}


def test_exported_py_is_the_source_preamble_and_literal_assignments(smoke_run: Path,
                                                                      tmp_path: Path) -> None:
    out = tmp_path / "winner.py"
    assert export_main([str(smoke_run), "--format", "py", "--out", str(out)]) == 0
    tree = ast.parse(out.read_text())
    assert tree.body
    names, preamble = set(), set()
    for stmt in tree.body:
        if ast.dump(stmt) in SOURCE_PREAMBLE:
            preamble.add(ast.dump(stmt))
            continue
        assert isinstance(stmt, ast.Assign), ast.dump(stmt)
        assert len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
        ast.literal_eval(stmt.value)  # raises unless a literal
        names.add(stmt.targets[0].id)
    assert preamble == SOURCE_PREAMBLE
    assert {"model_lr", "lr_scheduler_milestones", "batch_size", "epochs", "model_momentum",
            "gt_image_size"} <= names
