"""Ray's settings that must be in the environment before ``import ray`` or before the Tuner is
built: snapshot timing, and the token for a cluster."""

from __future__ import annotations

import os
from pathlib import Path

from trainable.errors import InputError


def driver_env() -> None:
    """Ray's settings for the driver, before the Tuner is built."""
    # Experiment state after every result, so a resume after kill -9 repeats nothing.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "0")
    # ...which Ray then warns about at every report; the snapshot is tiny next to a trial's work.
    os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "0")


def token_auth_for_address(address: str | None, token_file: str | None) -> None:
    """Send this machine's Ray token to a cluster only when the user asked for it.

    Ray 2.60 starts every local cluster with token auth (the token in ~/.ray/auth_token), and
    a driver sends the token only in token mode. Turning that on by itself for any ``--address``
    would hand the local token to whatever host the address names, so it is the user's call:
    ``--ray-token-file PATH`` (or their own RAY_AUTH_MODE=token, which Ray reads as it is)."""
    if token_file is None:
        return
    if not address:
        raise InputError("--ray-token-file: only applies with --address (a local Ray makes its "
                         "own token)")
    path = Path(token_file).expanduser()
    if not path.is_file():
        raise InputError(f"--ray-token-file {token_file}: no such file")
    # Before ray is imported: Ray reads both when it loads its config.
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path.resolve())

