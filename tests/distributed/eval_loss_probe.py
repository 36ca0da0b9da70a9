"""Under `torchrun`: evaluate a tiny BERT with plain `Trainer` and with `EMPTrainer(pruning_method="none")`, and
write each one's `eval_loss` (rank 0) to `OUTPUT_DIR/eval_loss.json`. Used by `test_eval_loss.py`."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from transformers import Trainer, TrainingArguments  # noqa: E402

from emp_hf import EMPConfig, EMPTrainer  # noqa: E402
from emp_hf_dev.fixtures import make_bert, make_text_dataset  # noqa: E402
from emp_hf_dev.launching import end_process_group


def main(output_dir: str) -> None:
    common = dict(per_device_eval_batch_size=8, report_to=[], use_cpu=True, disable_tqdm=True, seed=0)
    data = make_text_dataset(64, seed=1)
    losses = {}
    for name, trainer_class, args_class, extra in (
        ("trainer", Trainer, TrainingArguments, {}),
        ("none", EMPTrainer, EMPConfig, {"pruning_method": "none"}),
    ):
        args = args_class(output_dir=os.path.join(output_dir, name), **common, **extra)
        trainer = trainer_class(model=make_bert(), args=args, train_dataset=data, eval_dataset=data)
        losses[name] = trainer.evaluate()["eval_loss"]
    if int(os.environ.get("RANK", "0")) == 0:
        Path(output_dir, "eval_loss.json").write_text(json.dumps(losses))


if __name__ == "__main__":
    main(sys.argv[1])
    end_process_group()
