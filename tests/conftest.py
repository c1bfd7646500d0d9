import sys
from pathlib import Path

import pytest
import torch

# One thread: the tests' tensors are small, and on a 2-core machine that is busy with anything
# else two OpenMP threads stall for a scheduler quantum per op (measured up to 100× slower).
torch.set_num_threads(1)


@pytest.fixture
def recipes_importable(monkeypatch):
    """``import cli`` and the recipes work (recipes/ on sys.path); the test's excepthook is put
    back afterwards in case a recipe's entry point changed it."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "recipes"))
    hook = sys.excepthook
    yield
    sys.excepthook = hook
