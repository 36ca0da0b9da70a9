"""Shared fixtures (helpers live in `emp_hf_dev.fixtures`): offline Hub, tiny in-memory data, one torch thread."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import datasets  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from emp_hf import EMPTrainer  # noqa: E402
from emp_hf_dev.fixtures import make_args, make_bert, make_text_dataset  # noqa: E402


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


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The output directory of a finished 4-epoch run on 32 rows, checkpoints every 4 steps (checkpoint-4, -8, ...)."""
    tmp_path = tmp_path_factory.mktemp("run")
    args = make_args(tmp_path, num_train_epochs=4, save_strategy="steps", save_steps=4, logging_steps=100)
    EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(n=32)).train()
    return tmp_path / "out"
