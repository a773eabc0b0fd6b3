"""Shared fixtures: tiny in-memory splits for the loop and sampler tests."""

from __future__ import annotations

import pytest
from synthetic import make_split


def pytest_collection_modifyitems(config, items):
    """`gpu`-marked tests need CUDA: skipped, with the reason, on a machine without it."""
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_train():
    return make_split("train", clips=4, seed=0)


@pytest.fixture(scope="session")
def tiny_val():
    return make_split("val", clips=2, seed=1, centres=(3,))


@pytest.fixture(scope="session")
def clip_root(tmp_path_factory):
    """Six small clips on disk: the data set of the search tests (fast to train and score)."""
    from synthetic import write_clip_folders

    return write_clip_folders(tmp_path_factory.mktemp("clips"))


@pytest.fixture(scope="session")
def ray_session(tmp_path_factory):
    """One local Ray instance for the whole test session (starting one costs seconds), with two
    fake GPUs so fractional-GPU packing can be checked on a CPU machine."""
    import os

    ray = pytest.importorskip("ray")
    os.environ["ESPCN_TUNE_CACHE"] = str(tmp_path_factory.mktemp("frame-cache"))
    # address="local": never the last `ray start` cluster recorded in /tmp/ray (the multi-node
    # test's Cluster records one, and a killed run of it would leave that record behind).
    ctx = ray.init(address="local", num_cpus=2, num_gpus=2, include_dashboard=False,
                   configure_logging=False, log_to_driver=False)
    yield ctx.address_info["address"]
    ray.shutdown()


@pytest.fixture(scope="session")
def smoke_run(ray_session, clip_root, tmp_path_factory):
    """One real smoke search (``search_spaces/smoke.yaml``: 6 trials, ASHA, TPE) per test session,
    shared by every test file that reads a real run folder."""
    from tune.run import main

    storage = tmp_path_factory.mktemp("runs")
    rc = main(["--space", "smoke", "--storage", str(storage), "--name", "smoke",
               "--data", str(clip_root)])
    assert rc == 0
    return storage / "smoke"
