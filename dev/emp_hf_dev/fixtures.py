"""Test helpers: tiny random models built from configs and in-memory data (no Hub access).

Import them with `from emp_hf_dev.fixtures import ...` (tests, and the scripts the tests start in fresh processes);
`tests/conftest.py` holds only pytest fixtures.
"""

import datasets
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    TrainerCallback,
    ViTConfig,
    ViTForImageClassification,
)

from emp_hf import EMPConfig, EMPTrainer, EpochContext
from emp_hf.strategies.emp import EMP_SELECTIONS

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
    ("seta", {"seta_grouping": "kmeans"}),
    ("ucb", {"ucb_exploration": "visits"}),
    ("rs2", {}),
    ("small_loss", {}),
]
#: The cases whose plan sizes are known before an epoch is planned (what `max_steps` needs).
FIXED_SIZE_CASES = [(method, extra) for method, extra in PRUNING_CASES if extra.get("seta_grouping") != "kmeans"]


def make_text_dataset(n: int = 96, seq_len: int = 12, seed: int = 0) -> datasets.Dataset:
    """Learnable toy task: the label says whether token 5 appears in the sentence."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(6, VOCAB, (n, seq_len), generator=g)
    labels = torch.arange(n) % 2
    ids[labels == 1, 3] = 5
    ids[:, 0] = 1
    return datasets.Dataset.from_dict({"input_ids": ids.tolist(), "labels": labels.tolist()})


def make_bert(
    num_labels: int = 2, seed: int = 0, model_class: type = BertForSequenceClassification, **kwargs
) -> BertForSequenceClassification:
    """A 1-layer BERT with a `model_class` head (sequence classification by default)."""
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
    return model_class(config)


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


class StopAt(TrainerCallback):
    """Stops training after optimizer step `step` (saving a checkpoint there with `save=True`)."""

    def __init__(self, step: int, save: bool = False) -> None:
        self.step = step
        self.save = save

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_save = control.should_save or self.save
            control.should_training_stop = True


def make_args(tmp_path, **kwargs) -> EMPConfig:
    defaults = dict(output_dir=str(tmp_path / "out"), **TRAINING_DEFAULTS, pruning_method="random", prune_ratio=0.5)
    defaults.update(kwargs)
    return EMPConfig(**defaults)


def make_word_tokenizer(texts: list[str]):
    """A word-level fast tokenizer over the words of `texts` (no BOS; `<eos>` and `<pad>`), built offline."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted({word for text in texts for word in text.split()})
    vocab = {token: i for i, token in enumerate(["<pad>", "<eos>", "<unk>", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")


def make_tiny_llama(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=64,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
    )
    return LlamaForCausalLM(config)


def make_tiny_t5(vocab_size: int = VOCAB, seed: int = 0):
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=vocab_size,
        d_model=16,
        d_kv=8,
        d_ff=32,
        num_layers=1,
        num_decoder_layers=1,
        num_heads=2,
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
    )
    return T5ForConditionalGeneration(config)


def make_prompt_completion_dataset(n: int = 32, seed: int = 0) -> datasets.Dataset:
    """Sentiment as instructions: a prompt of words, the completion ' positive' or ' negative' (by word 'good')."""
    g = torch.Generator().manual_seed(seed)
    filler = ["the", "film", "was", "plot", "actors", "long", "story", "music", "ending", "scene"]
    prompts, completions = [], []
    for i in range(n):
        length = 3 + int(torch.randint(0, 5, (1,), generator=g))
        words = [filler[int(j)] for j in torch.randint(0, len(filler), (length,), generator=g)]
        positive = i % 2 == 0
        words.insert(int(torch.randint(0, length, (1,), generator=g)), "good" if positive else "bad")
        prompts.append("Review: " + " ".join(words) + " Sentiment:")
        completions.append(" positive" if positive else " negative")
    return datasets.Dataset.from_dict({"prompt": prompts, "completion": completions})


def train_none(tmp_path, dataset, name: str = "out", **kwargs) -> EMPTrainer:
    """One epoch of `pruning_method="none"` on `dataset`, trained, in `tmp_path / name`."""
    args = make_args(tmp_path / name, pruning_method="none", prune_ratio=None, num_train_epochs=1, **kwargs)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=dataset)
    trainer.train()
    return trainer


#: The ways `damage_pruning_state` breaks a checkpoint's pruning state.
STATE_DAMAGES = ["truncated manifest", "empty-dict manifest", "list manifest", "truncated state", "byte-flipped state"]


def damage_pruning_state(path, how: str) -> None:
    """Break the pruning state in checkpoint folder `path` in one of the `STATE_DAMAGES` ways."""
    if how == "truncated manifest":
        (path / "pruning_state.json").write_text('{"sha256": "ab')
    elif how == "empty-dict manifest":
        (path / "pruning_state.json").write_text("{}")
    elif how == "list manifest":
        (path / "pruning_state.json").write_text("[]")
    elif how == "truncated state":
        data = (path / "pruning_state.pt").read_bytes()
        (path / "pruning_state.pt").write_bytes(data[:300])
    elif how == "byte-flipped state":
        data = bytearray((path / "pruning_state.pt").read_bytes())
        data[60] ^= 0xFF
        data[200] ^= 0xFF
        (path / "pruning_state.pt").write_bytes(bytes(data))
    else:
        raise ValueError(f"unknown damage {how!r}: choose one of {STATE_DAMAGES}")


def context_for(tables: dict[str, torch.Tensor], num_keep: int | None = None, epoch: int = 1) -> EpochContext:
    """The `EpochContext` of pruned epoch `epoch` (after one warm-up epoch, of `epoch + 1`) of a run on the rows of
    `tables`, keeping `num_keep` of them: what the planner would hand a strategy's `score`/`select` called directly."""
    num_rows = tables["frequency"].numel()
    return EpochContext(
        epoch=epoch,
        phase="pruned",
        num_epochs=epoch + 1,
        num_rows=num_rows,
        num_keep=num_rows if num_keep is None else num_keep,
        warmup_epochs=1,
        anneal_epochs=0,
    )
