"""Shared fixtures (helpers live in `emp_hf_dev.fixtures`): offline Hub, tiny in-memory data, one torch thread."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import datasets  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from emp_hf_dev.fixtures import make_text_dataset  # noqa: E402


@pytest.fixture
def text_dataset() -> datasets.Dataset:
    return make_text_dataset()


@pytest.fixture
def one_thread():
    """One torch thread: two threads on two shared cores spin against other jobs (10x slower steps)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
