"""Fixtures for tests/methods: real data must be there, seeded runs."""

from __future__ import annotations

import lightning as L
import pytest

from ssl_method_helpers import PNEUMONIA


@pytest.fixture(autouse=True)
def _one_thread_seeded():
    assert PNEUMONIA.is_file(), f"real data missing: {PNEUMONIA} (the shared folder must sit beside the repo)"
    L.seed_everything(0, verbose=False)
