"""Fixtures for tests/callbacks: the helpers of tests/methods and of this folder importable, seeded runs."""

from __future__ import annotations

import os
import sys

import lightning as L
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
for _path in (os.path.join(os.path.dirname(_HERE), "methods"), _HERE):
    if _path not in sys.path:
        sys.path.insert(0, _path)


@pytest.fixture(autouse=True)
def _seeded():
    L.seed_everything(0, verbose=False)
