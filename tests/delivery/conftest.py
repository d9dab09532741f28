"""Fixtures of the delivery tests (the helpers are in ``delivery_kit``)."""

from __future__ import annotations

from typing import Any

import pytest
from delivery_kit import Clients


@pytest.fixture
def clients(procs: Any) -> Clients:
    return Clients(procs)
