"""Test-wide environment: no network, caches out of $HOME, Triton through its CPU interpreter without a GPU.

These variables must be set before the first ``import triton`` (and before datasets/huggingface_hub read them),
which is why they live at the very top of the root conftest.
"""

import os
import shutil
import tempfile

_GPU = bool(os.environ.get("GLASSFORMER_TEST_GPU")) or (
    shutil.which("nvidia-smi") is not None and os.system("nvidia-smi -L >/dev/null 2>&1") == 0
)
if not _GPU:
    os.environ.setdefault("TRITON_INTERPRET", "1")
_cache = os.environ.get("GLASSFORMER_TEST_CACHE") or os.path.join(tempfile.gettempdir(), "glassformer-test-cache")
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HOME", os.path.join(_cache, "hf"))
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_DIR", os.path.join(_cache, "wandb"))
os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(_cache, "inductor"))
os.environ.setdefault("TRITON_CACHE_DIR", os.path.join(_cache, "triton"))
os.environ.setdefault("GLASSFORMER_CACHE", os.path.join(_cache, "data"))

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run `make test-gpu` on a GPU machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _deterministic_torch():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_thread():
    """One intra-op torch thread for the test. Debug-sized tensors on a 2-core machine gain nothing from a second
    thread and lose 5-10x to contention when other work shares the cores (measured)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
