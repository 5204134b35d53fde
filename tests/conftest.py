"""Shared pytest set-up: hypothesis profiles, and a fixed seed for every test."""
import os

import pytest
from hypothesis import HealthCheck, settings

# CI machines are slow and shared: no per-example deadline there.
settings.register_profile("ci", deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, max_examples=10,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(autouse=True)
def _seed():
    import numpy as np
    import minilooped

    np.random.seed(0)
    minilooped.manual_seed(0)
    yield
