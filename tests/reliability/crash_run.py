"""A training process for the crash-safety tests: prints `STEP n` after every optimizer step.

    python crash_run.py OUTPUT_DIR [--resume] [--slow-save]

`--slow-save` makes every pruning-state file write announce itself (`WRITING name`) and pause, so a test
can kill the process in the middle of a checkpoint save. The final pruning state goes to OUTPUT_DIR/final.pt.
"""

import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from transformers import TrainerCallback  # noqa: E402

import emp_hf.integration.checkpoint  # noqa: E402
from emp_hf import EMPTrainer  # noqa: E402
from emp_hf_dev.fixtures import make_args, make_bert, make_text_dataset  # noqa: E402


class PrintSteps(TrainerCallback):
    def on_step_end(self, args, state, control, **kwargs):
        print(f"STEP {state.global_step}", flush=True)


def main() -> None:
    output_dir = sys.argv[1]
    if "--slow-save" in sys.argv:
        write = emp_hf.integration.checkpoint._atomic_write

        def slow_write(path: str, data: bytes) -> None:
            print(f"WRITING {os.path.basename(path)}", flush=True)
            time.sleep(1.0)
            write(path, data)

        emp_hf.integration.checkpoint._atomic_write = slow_write
    args = make_args(
        Path(output_dir),
        pruning_method="emp",
        num_train_epochs=4,
        save_strategy="steps",
        save_steps=4,
        logging_steps=100,
    )
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(), callbacks=[PrintSteps()])
    trainer.train(resume_from_checkpoint=True if "--resume" in sys.argv else None)
    torch.save(trainer.pruning_state.state_dict(), os.path.join(output_dir, "final.pt"))
    print("DONE", flush=True)


if __name__ == "__main__":
    main()
