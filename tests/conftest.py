"""Shared fixtures: tiny in-memory splits for the loop and sampler tests."""

from __future__ import annotations

import pytest
from synthetic import make_split


@pytest.fixture(scope="session")
def tiny_train():
    return make_split("train", clips=4, seed=0)


@pytest.fixture(scope="session")
def tiny_val():
    return make_split("val", clips=2, seed=1, centres=(3,))
