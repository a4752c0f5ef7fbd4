"""Fixtures for tests/graph: helpers importable, seeded runs, and no write outside tmp.

Every test gets its own ``LIGHTNING_SSL_CACHE`` (so a processed graph never lands in ``~/.cache``) on top
of the ``cache_dir=tmp_path`` the tests pass explicitly.
"""

from __future__ import annotations

import os
import sys

import lightning as L
import pytest

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True)
def _seeded_and_cached(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("LIGHTNING_SSL_CACHE", str(tmp_path_factory.mktemp("ssl_cache")))
    L.seed_everything(0, verbose=False)
