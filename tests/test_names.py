"""Names and ids that become paths: the one rule, and the traversal attacks it stops."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from analysis.export import main as export_main
from tests import run_fixture as fx
from trainable.errors import InputError
from trainable.names import inside, safe_name
from tune.run import main as run_main


@pytest.mark.parametrize("value", ["run-1", "a.b_c", "..x", "A9"])
def test_safe_names_pass(value: str) -> None:
    assert safe_name(value, "`--name`") == value


@pytest.mark.parametrize("value", ["../x", "a/b", ".", "..", "", "a b", "/abs", "x\\y", 3, None])
def test_unsafe_names_name_the_value_and_the_rule(value: object) -> None:
    with pytest.raises(InputError, match=r"`--name` is .*must be letters, digits"):
        safe_name(value, "`--name`")


def test_inside_refuses_a_symlink_out(tmp_path: Path) -> None:
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "link").symlink_to(tmp_path)
    assert inside(tmp_path / "root" / "a", tmp_path / "root", "x") == tmp_path / "root" / "a"
    with pytest.raises(InputError, match="outside"):
        inside(tmp_path / "root" / "link" / "a", tmp_path / "root", "x")


@pytest.mark.parametrize("flag", ["--name", "--resume"])
@pytest.mark.parametrize("name", ["../escaped", "a/b"])
def test_run_name_outside_storage_is_refused(tmp_path: Path, flag: str, name: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / "runs"
    assert run_main(["--space", "smoke", "--storage", str(storage), flag, name,
                     "--data", "builtin"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and repr(name) in err and flag in err
    assert list(tmp_path.iterdir()) == []


def test_storage_that_is_a_file_is_refused(tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    storage = tmp_path / "runs"
    storage.write_text("not a folder")
    assert run_main(["--space", "smoke", "--storage", str(storage), "--name", "x"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--storage" in err and "is a file" in err


def test_traversing_trial_id_writes_nothing_outside(tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    run = fx.write_small_run(tmp_path / "runs")
    result = fx.trial_dir(run, fx.WINNER) / "result.json"
    lines = [json.loads(line) for line in result.read_text().splitlines()]
    for row in lines:
        row["trial_id"] = "../../../escaped"
    result.write_text("".join(json.dumps(r) + "\n" for r in lines))
    before = sorted(p for p in tmp_path.rglob("*"))
    assert export_main([str(run)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(result) in err and "trial_id" in err
    assert sorted(p for p in tmp_path.rglob("*")) == before
