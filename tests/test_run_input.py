"""tune.run's refusals that need no Ray: each bad input is one line on stderr and exit 2."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import pytest

from trainable.errors import InputError
from tune import run
from tune.ray_edge import environment, state_repair, version


def _args(**kw) -> argparse.Namespace:
    base = {"address": None, "dashboard": False, "verbose": False, "ray_token_file": None}
    return argparse.Namespace(**{**base, **kw})


def test_no_token_is_sent_unless_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH"):  # restored after the test
        monkeypatch.setenv(name, "x")
        monkeypatch.delenv(name)
    environment.token_auth_for_address("10.0.0.9:6379", None)
    assert "RAY_AUTH_MODE" not in os.environ and "RAY_AUTH_TOKEN_PATH" not in os.environ
    token = tmp_path / "auth_token"
    token.write_text("t")
    environment.token_auth_for_address("10.0.0.9:6379", str(token))
    assert os.environ["RAY_AUTH_MODE"] == "token"
    assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(token)


@pytest.mark.parametrize(("address", "name", "message"), [
    ("10.0.0.9:6379", "missing", "no such file"),
    (None, "auth_token", "only applies with --address"),
])
def test_bad_token_file_is_refused(tmp_path: Path, address, name, message) -> None:
    (tmp_path / "auth_token").write_text("t")
    with pytest.raises(InputError, match=message):
        environment.token_auth_for_address(address, str(tmp_path / name))


def test_unreachable_address_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    import ray

    def refuse(**_):
        raise ConnectionError("Could not find any running Ray instance.\nmore detail")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", refuse)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    with pytest.raises(InputError) as e:
        run._start_ray(_args(address="10.0.0.9:6379"))
    text = str(e.value)
    assert "\n" not in text and "--address 10.0.0.9:6379" in text and "--ray-token-file" in text


def test_resume_rebuilds_the_space_from_the_run_record_not_the_file(tmp_path):
    """An edited or moved space file does not change what a resumed run trains."""
    import yaml

    from tune.run import _resume_spec
    from tune.space import load_space, with_overrides

    started = with_overrides(load_space("smoke"), trials=3)
    space = tmp_path / "mine.yaml"
    space.write_text(yaml.safe_dump({**started.document, "trials": 9,
                                     "config": {"batch_size": 32, "use_amp": False}}))
    from analysis.record import RunRecord, SchedulerPlan

    rec = RunRecord("r", (), str(space), dict(started.document), started.params, None,
                    SchedulerPlan("asha"), None, None, None, overrides={"trials": 3})
    for _ in ("edited", "moved"):
        spec = _resume_spec(rec, tmp_path)
        assert spec.trials == 3 and spec.base == started.base and spec.params == started.params
        space.unlink(missing_ok=True)
    # A record from before the copy was kept falls back to the file as it is now.
    space.write_text(yaml.safe_dump({**started.document, "trials": 9}))
    assert _resume_spec(rec.replace(space=None), tmp_path).trials == 3


def test_another_ray_version_is_named_once_and_its_private_files_are_not_repaired(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert version.known()  # the pinned version is the tested one
    monkeypatch.setattr(version, "installed", lambda: "2.71.0")
    monkeypatch.setattr(version, "_warned", False)
    assert not version.known()
    with caplog.at_level("WARNING", logger="tune"):
        assert not version.check() and not version.check()
        (tmp_path / "experiment_state-2026-01-02_03-04-05.json").write_text("")  # cut short
        assert state_repair.repair_state(tmp_path, tmp_path) == []
    said = [r.getMessage() for r in caplog.records]
    assert sum("Ray 2.71.0 is installed" in m for m in said) == 1
    assert any("not repaired" in m for m in said)
