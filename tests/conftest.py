"""Shared fixtures.  One Ray instance per test session (ray.init costs seconds; two instances break cleanup)."""

from __future__ import annotations

import pytest
import torch

torch.set_num_threads(1)


@pytest.fixture
def seeded():
    torch.manual_seed(0)
    return torch.Generator().manual_seed(0)
