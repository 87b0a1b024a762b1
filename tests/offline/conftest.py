"""Fixtures of the offline tests: a bag of simulated driving and a config that trains quickly."""

from __future__ import annotations

from pathlib import Path

import pytest
from car_bags import quick_config, write_car_bag


@pytest.fixture(scope="session")
def car_bag(tmp_path_factory) -> Path:
    return write_car_bag(tmp_path_factory.mktemp("bags") / "car_0000", 700)


@pytest.fixture(scope="session")
def fast_config(tmp_path_factory) -> Path:
    return quick_config(tmp_path_factory.mktemp("cfg") / "config")
