"""A small pruning run on real offline data: MiniLM fine-tuned on movie-review sentiment sentences.

    python recipes/demo.py                       # EMP at prune ratio 0.5, 3 epochs, 2,000 training sentences
    python recipes/demo.py --pruning_method random --prune_ratio 0.7 --max_train_samples 4000

Every `EMPConfig` field is a flag, and `--threads N` fixes torch's CPU threads (default: `OMP_NUM_THREADS`,
else the cores other jobs leave free, re-checked while training; the choice is printed first). Prints the
accuracy, the realised saving and the steps saved, and writes the per-example training-frequency histogram into
`output_dir`. Shows one progress bar (training), no per-step log dicts: the logs stay in `output_dir`'s trainer
state. Uses only local files (`make setup`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import datasets
import numpy as np
import transformers
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    DataCollatorWithPadding,
    PrinterCallback,
    ProgressCallback,
)

from emp_hf import EMPConfig, EMPTrainer
from emp_hf.core.schedule import StepCounter
from emp_hf_dev.offline_data import load_sentiment_sentences, minilm_path
from emp_hf_dev.recipe_runtime import follow_free_cores, parse_recipe_args


@dataclass
class DemoArguments:
    max_train_samples: int = field(default=2000, metadata={"help": "Training sentences to use."})
    max_eval_samples: int = field(default=1000, metadata={"help": "Held-out sentences to evaluate on."})
    max_seq_length: int = field(default=64, metadata={"help": "Tokens per sentence."})


class TrainingBarOnly(ProgressCallback):
    """The training progress bar, without the log dicts it prints at every logging step or the evaluation bar."""

    def on_log(self, args, state, control, logs=None, **kwargs) -> None:
        pass

    def on_prediction_step(self, args, state, control, eval_dataloader=None, **kwargs) -> None:
        pass


def main(argv: list[str] | None = None) -> dict[str, float]:
    defaults = {
        "output_dir": "demo_output", "pruning_method": "emp", "prune_ratio": 0.5, "num_train_epochs": 3,
        "per_device_train_batch_size": 32, "per_device_eval_batch_size": 128, "learning_rate": 5e-5,
        "logging_steps": 10, "report_to": "none", "save_strategy": "no", "seed": 42,
    }  # fmt: skip
    demo, args = parse_recipe_args((DemoArguments, EMPConfig), argv, defaults)  # also sets torch's threads

    datasets.disable_progress_bars()  # the tokenization bars
    transformers.logging.set_verbosity_error()  # "weights not initialized" for the new classification head
    data = load_sentiment_sentences()
    train = data["train"].shuffle(seed=0).select(range(min(demo.max_train_samples, len(data["train"]))))
    test = data["test"].select(range(min(demo.max_eval_samples, len(data["test"]))))
    tokenizer = AutoTokenizer.from_pretrained(minilm_path())

    def tokenize(batch: dict) -> dict:
        return tokenizer(batch["sentence"], truncation=True, max_length=demo.max_seq_length)

    train = train.map(tokenize, batched=True, remove_columns=["sentence"])
    test = test.map(tokenize, batched=True, remove_columns=["sentence"])
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)

    def compute_metrics(prediction) -> dict[str, float]:
        return {"accuracy": float((np.argmax(prediction.predictions, -1) == prediction.label_ids).mean())}

    trainer = EMPTrainer(
        model=model,
        args=args,
        train_dataset=train,
        eval_dataset=test,
        processing_class=tokenizer,
        data_collator=DataCollatorWithPadding(tokenizer),
        compute_metrics=compute_metrics,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    if not args.disable_tqdm:
        trainer.add_callback(TrainingBarOnly)
    follow_free_cores(trainer)
    start = time.perf_counter()
    output = trainer.train()
    minutes = (time.perf_counter() - start) / 60
    metrics = trainer.evaluate()
    full_epoch = StepCounter(
        args.per_device_train_batch_size, 1, args.gradient_accumulation_steps, args.dataloader_drop_last
    )
    full_steps = int(args.num_train_epochs) * full_epoch.update_steps(len(train))
    state = trainer.pruning_state
    print(f"\n{'=' * 64}")
    print(f"method            {args.pruning_method} (prune_ratio {args.prune_ratio})")
    print(f"plan sizes        {state.epoch_plan_sizes} of {state.num_rows} rows")
    print(f"realised saving   {state.realized_saving():.1%} of the example visits")
    print(f"optimizer steps   {output.global_step} (full data: {full_steps})")
    print(f"training time     {minutes:.1f} min")
    print(f"test accuracy     {metrics['eval_accuracy']:.4f} on {len(test)} held-out sentences")
    plots = _save_frequency_plot(trainer, args.output_dir)
    if plots:
        print(f"frequency plot    {plots}")
    print("=" * 64)
    return {"accuracy": metrics["eval_accuracy"], "realized_saving": state.realized_saving()}


def _save_frequency_plot(trainer: EMPTrainer, output_dir: str) -> str | None:
    try:
        from emp_hf.records.plots import save_pruning_plots
    except ImportError:
        return None
    paths = save_pruning_plots(trainer.pruning_state, output_dir)
    return ", ".join(str(p) for p in paths)


if __name__ == "__main__":
    main()
