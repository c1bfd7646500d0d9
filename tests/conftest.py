import sys
from pathlib import Path

import pytest
import torch

# One thread: the tests' tensors are small, and on a 2-core machine that is busy with anything
# else two OpenMP threads stall for a scheduler quantum per op (measured up to 100× slower).
torch.set_num_threads(1)


@pytest.fixture
def recipes_importable(monkeypatch):
    """``import common`` and the recipes work; recipes/common.py sets sys.excepthook on import
    (one-line errors for the command line), so the test's hook is put back afterwards."""
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1] / "recipes"))
    hook = sys.excepthook
    yield
    sys.excepthook = hook
