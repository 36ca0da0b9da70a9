"""Shared fixtures: tiny random models built from configs and in-memory data (no Hub access)."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

import datasets  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from transformers import BertConfig, BertForSequenceClassification, ViTConfig, ViTForImageClassification  # noqa: E402

from emp_hf import EMPConfig  # noqa: E402
from emp_hf.strategies.emp import EMP_SELECTIONS  # noqa: E402

VOCAB = 64

#: Every pruning method and EMP selection rule, as (pruning_method, extra EMPConfig fields).
PRUNING_CASES = [
    ("random", {}),
    ("epsilon_greedy", {}),
    ("ucb", {}),
    ("infobatch", {}),
    ("infobatch", {"infobatch_match_budget": True}),
    *[("emp", {"emp_selection": selection}) for selection in EMP_SELECTIONS],
    ("seta", {}),
    ("ucb", {"ucb_exploration": "visits"}),
]


def make_text_dataset(n: int = 96, seq_len: int = 12, seed: int = 0) -> datasets.Dataset:
    """Learnable toy task: the label says whether token 5 appears in the sentence."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, VOCAB, (n, seq_len), generator=g)
    labels = torch.arange(n) % 2
    ids[labels == 1, 3] = 5
    ids[:, 0] = 1
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})


def make_bert(num_labels: int = 2, seed: int = 0, **kwargs) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        num_labels=num_labels,
        **kwargs,
    )
    return BertForSequenceClassification(config)


def make_image_dataset(n: int = 64, size: int = 8, seed: int = 0) -> datasets.Dataset:
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 3
    pixels = torch.randn(n, 3, size, size, generator=g) * 0.1 + labels.view(-1, 1, 1, 1).float()
    return datasets.Dataset.from_dict({"pixel_values": pixels.tolist(), "labels": labels.tolist()}).with_format(
        "torch"
    )


def make_vit(seed: int = 0) -> ViTForImageClassification:
    torch.manual_seed(seed)
    config = ViTConfig(
        image_size=8,
        patch_size=4,
        num_channels=3,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        num_labels=3,
    )
    return ViTForImageClassification(config)


#: TrainingArguments shared by every test run (what plain `Trainer` runs take too).
TRAINING_DEFAULTS = dict(
    num_train_epochs=3,
    per_device_train_batch_size=8,
    learning_rate=1e-3,
    report_to=[],
    save_strategy="no",
    logging_steps=1,
    disable_tqdm=True,
    use_cpu=True,
    seed=0,
)


def make_args(tmp_path, **kwargs) -> EMPConfig:
    defaults = dict(output_dir=str(tmp_path / "out"), **TRAINING_DEFAULTS, pruning_method="random", prune_ratio=0.5)
    defaults.update(kwargs)
    return EMPConfig(**defaults)


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
