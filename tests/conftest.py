"""Keep every test tiny and CPU-only; make the repository root importable and the default cwd."""
import os
import sys
import warnings

os.environ["CUDA_VISIBLE_DEVICES"] = ""
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
warnings.filterwarnings("ignore", category=DeprecationWarning)

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("TEST_THREADS", "2")))  # tools/mutants.py: 1 per parallel run

ALGOS = ["inril_residual", "inril_pcgrad", "ire_vla_lite", "rlpd", "rlif", "conrft", "asap_delta", "grape_tpo"]


@pytest.fixture
def root():
    return ROOT


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Run in a temporary folder (runs/ goes there); data/ is reached through the absolute ROOT."""
    monkeypatch.chdir(tmp_path)
    return tmp_path
