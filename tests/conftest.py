"""Shared test set-up: ``tests/`` on ``sys.path`` (for ``ddp_utils``) and one intra-op thread per test."""

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Tiny models on 2 shared cores: one intra-op thread is 2-4x faster than two contended ones.

    Tests that train a real-size model (tests/learning) raise it for their own duration.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
