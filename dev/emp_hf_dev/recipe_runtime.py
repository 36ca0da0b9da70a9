"""What the recipes (`glue.py`, `image_classification.py`, `contrastive.py`, `sft.py`, `demo.py`) share: arguments,
torch's thread count, logging, Hub access that fails fast without network, image loading, training with resume, and
the final report.

Not part of the `emp_hf` package: the recipes import it from the development package that `make setup` installs
next to emp_hf (`from emp_hf_dev.recipe_runtime import ...`).
"""

from __future__ import annotations

import functools
import json
import logging
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch
import torch.nn.functional as F
import transformers
from datasets import DatasetDict, load_dataset
from transformers import TrainerCallback

from emp_hf import EMPConfig, EMPTrainer
from emp_hf.core.schedule import StepCounter
from emp_hf.integration.config import EMPArgumentParser
from emp_hf.records.plots import save_pruning_plots

HUB_PROBE_TIMEOUT = 3.0
#: Short names of Hub datasets the image recipes accept.
DATASET_ALIASES = {"cifar10": "uoft-cs/cifar10", "cifar100": "uoft-cs/cifar100"}

logger = logging.getLogger(__name__)


# ----------------------------------------------------------------------------------------------------------
# Arguments, processes and logging
# ----------------------------------------------------------------------------------------------------------


def cpu_processes_without_accelerator() -> None:
    """Several processes (`accelerate launch`, `torchrun`) on a machine without GPUs train together on CPU.

    Accelerate only forms a CPU process group (gloo) when asked to use the CPU; otherwise every process finds
    no GPU and trains alone on all the data. Call before the arguments are parsed.
    """
    has_accelerator = torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not has_accelerator:
        os.environ["ACCELERATE_USE_CPU"] = "true"


def parse_recipe_args(
    dataclass_types: tuple[type, ...], argv: list[str] | None, defaults: dict[str, Any] | None = None
) -> tuple[Any, ...]:
    """The dataclasses from the flags `argv` (default `sys.argv[1:]`), or from a single `.json` argument file.

    `defaults` are the recipe's own defaults: every flag or key of the file overrides them. A value a config
    refuses ends the program with one `error:` line and exit status 2, as argparse does with a bad flag. Every
    recipe also takes `--threads` ([`ThreadArguments`]): torch's thread count is set here, before any work.
    """
    parser = EMPArgumentParser((*dataclass_types, ThreadArguments))
    argv = list(sys.argv[1:] if argv is None else argv)
    defaults = defaults or {}
    if len(argv) == 1 and argv[0].endswith(".json"):
        config = json.loads(Path(os.path.abspath(argv[0])).read_text(encoding="utf-8"))
        *parsed, threads = parser.parse_dict({**defaults, **config})
    else:
        flags = [item for key, value in defaults.items() for item in (f"--{key}", str(value))]
        *parsed, threads = parser.parse_args_into_dataclasses(args=flags + argv)  # later flags win
    set_torch_threads(threads.threads)
    return tuple(parsed)


# ----------------------------------------------------------------------------------------------------------
# Threads: as many as the cores other jobs leave free
# ----------------------------------------------------------------------------------------------------------

#: Re-measure the free cores this often (seconds of training).
THREAD_CHECK_INTERVAL = 10.0
#: Other jobs may keep this much of a core busy before a torch thread gives that core up.
THREAD_SLACK = 0.3
_TORCH_DEFAULT_THREADS = torch.get_num_threads()  # torch's own choice (OMP_NUM_THREADS, or the physical cores)


@dataclass
class ThreadArguments:
    """How many CPU threads torch uses (`torch.set_num_threads`)."""

    threads: int | None = field(
        default=None,
        metadata={
            "help": "torch's CPU threads. Default: OMP_NUM_THREADS when it is set, else the cores that other jobs "
            "leave free, measured at the start and again every 10 s of training (on a shared machine, threads "
            "that compete with other jobs for a core make each step many times slower)."
        },
    )

    def __post_init__(self) -> None:
        if self.threads is not None and (isinstance(self.threads, bool) or self.threads < 1):
            raise ValueError(f"--threads {self.threads} is invalid: it must be a whole number >= 1.")


def usable_cores() -> int:
    """The cores this process may run on: its CPU affinity, capped by a cgroup CPU quota (containers)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


class CoreMeter:
    """How many cores other processes keep busy: the busy time of this process's CPUs (`/proc/stat`) since the
    last reading, less this process's own CPU time. `None` where `/proc/stat` cannot be read (not Linux)."""

    def __init__(self) -> None:
        self.cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        self._last = self._sample()

    def _sample(self) -> tuple[float, float, float] | None:
        try:
            lines = Path("/proc/stat").read_text().splitlines()
        except OSError:
            return None
        wanted = None if self.cpus is None else {f"cpu{c}" for c in self.cpus}
        busy = total = 0
        for line in lines:
            name, *ticks = line.split()
            if not name.startswith("cpu") or name == "cpu" or (wanted is not None and name not in wanted):
                continue
            user, nice, system, idle, iowait, irq, softirq, steal = (int(t) for t in ticks[:8])
            busy += user + nice + system + irq + softirq + steal  # steal: the hypervisor gave the core away
            total += user + nice + system + idle + iowait + irq + softirq + steal
        return (busy, total, time.process_time()) if total else None

    def others_busy(self) -> float | None:
        """Cores kept busy by other processes since the last call (or since the meter was made)."""
        last, now = self._last, self._sample()
        self._last = now
        if last is None or now is None or now[1] <= last[1]:
            return None
        ncpu = len(self.cpus) if self.cpus is not None else os.cpu_count() or 1
        ticks = now[1] - last[1]
        seconds = ticks / ncpu / os.sysconf("SC_CLK_TCK")
        busy_cores = ncpu * (now[0] - last[0]) / ticks
        own_cores = (now[2] - last[2]) / seconds if seconds > 0 else 0.0
        return max(0.0, busy_cores - own_cores)


def threads_for(free_cores: float, limit: int) -> int:
    """One thread per core that other jobs leave (nearly: `THREAD_SLACK`) free, at least 1, at most `limit`."""
    return max(1, min(limit, math.floor(free_cores + THREAD_SLACK)))


class TorchThreads(TrainerCallback):
    """torch's CPU thread count: fixed (`--threads`, `OMP_NUM_THREADS`, or an earlier `torch.set_num_threads` in
    this process), or following the free cores.

    Following, it sets one thread per core that other processes leave free (shared among this machine's training
    processes), measured when it is made and again every `THREAD_CHECK_INTERVAL` seconds of training, so that a
    shared machine is not slowed by threads waiting for each other on contended cores.
    """

    def __init__(self, threads: int | None = None) -> None:
        self.meter: CoreMeter | None = None
        if threads is not None:
            self.reason = f"--threads {threads}"
        elif os.environ.get("OMP_NUM_THREADS"):
            threads = torch.get_num_threads()
            self.reason = f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
        elif torch.get_num_threads() != _TORCH_DEFAULT_THREADS:
            threads = torch.get_num_threads()
            self.reason = "set in this process by torch.set_num_threads"
        else:
            self.meter = CoreMeter()
            self.local_processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
            self.limit = max(1, min(usable_cores(), _TORCH_DEFAULT_THREADS) // self.local_processes)
            time.sleep(0.5)
            others = self.meter.others_busy()
            if others is None and hasattr(os, "getloadavg"):  # no /proc/stat: the 1-minute load average
                others, self.meter = os.getloadavg()[0], None
            threads = self._fit(others) if others is not None else torch.get_num_threads()
            shown = "an unknown number" if others is None else f"{others:.1f}"
            self.reason = (
                f"{usable_cores()} cores, other jobs use {shown} of them"
                + ("; re-checked while training" if self.meter is not None else "")
                + "; --threads N or OMP_NUM_THREADS=N fixes it"
            )
        self.threads = threads
        torch.set_num_threads(threads)
        self._next_check = time.monotonic() + THREAD_CHECK_INTERVAL

    def _fit(self, others: float) -> int:
        return threads_for((usable_cores() - others) / self.local_processes, self.limit)

    def on_step_begin(self, args, state, control, **kwargs) -> None:
        if self.meter is None or time.monotonic() < self._next_check:
            return
        self._next_check = time.monotonic() + THREAD_CHECK_INTERVAL
        others = self.meter.others_busy()
        if others is None:
            return
        threads = self._fit(others)
        if threads != self.threads:
            logger.info(f"torch threads: {self.threads} -> {threads} (other jobs now use {others:.1f} cores)")
            self.threads = threads
            torch.set_num_threads(threads)


_torch_threads: TorchThreads | None = None


def set_torch_threads(threads: int | None = None) -> TorchThreads:
    """Set torch's thread count now (see [`TorchThreads`]) and say so on the main process; `train_and_save` and
    `follow_free_cores` then keep it fitting the free cores during training."""
    global _torch_threads
    _torch_threads = TorchThreads(threads)
    if int(os.environ.get("LOCAL_RANK", "0")) == 0:
        print(f"torch threads: {_torch_threads.threads} ({_torch_threads.reason})", flush=True)
    return _torch_threads


def follow_free_cores(trainer: EMPTrainer) -> None:
    """Let the thread count of the last `set_torch_threads` follow the free cores while `trainer` trains."""
    if _torch_threads is not None and _torch_threads.meter is not None:
        trainer.remove_callback(TorchThreads)
        trainer.add_callback(_torch_threads)


def setup_logging(
    training_args: EMPConfig, recipe_logger: logging.Logger, *, transformers_explicit_format: bool = True
) -> None:
    """Log to stdout at this process's level: the recipe's logger, this module's, `datasets`' and `transformers'`
    (in transformers' explicit format unless `transformers_explicit_format` is False)."""
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s",
        datefmt="%m/%d/%Y %H:%M:%S",
        handlers=[logging.StreamHandler(sys.stdout)],
    )
    log_level = training_args.get_process_log_level()
    recipe_logger.setLevel(log_level)
    logger.setLevel(log_level)
    datasets.utils.logging.set_verbosity(log_level)
    transformers.utils.logging.set_verbosity(log_level)
    if transformers_explicit_format:
        transformers.utils.logging.enable_default_handler()
        transformers.utils.logging.enable_explicit_format()


@dataclass
class HubModelArguments:
    """The model arguments every recipe that loads from the Hub shares (a recipe's `ModelArguments` adds its own)."""

    cache_dir: str | None = field(default=None, metadata={"help": "Where to store downloaded models."})
    model_revision: str = field(default="main", metadata={"help": "Model version (branch, tag or commit)."})
    token: str | None = field(default=None, metadata={"help": "Hub token for private models."})
    trust_remote_code: bool = field(default=False, metadata={"help": "Allow custom model code from the Hub."})
    ignore_mismatched_sizes: bool = field(
        default=False, metadata={"help": "Load a checkpoint whose classifier head has another size."}
    )

    def hub_kwargs(self, offline_hint: str) -> dict[str, Any]:
        """The keyword arguments of `from_hub` for the config, tokenizer or processor and model of this checkpoint."""
        return dict(
            cache_dir=self.cache_dir,
            revision=self.model_revision,
            token=self.token,
            trust_remote_code=self.trust_remote_code,
            offline_hint=offline_hint,
        )


def log_process(training_args: EMPConfig, recipe_logger: logging.Logger) -> None:
    recipe_logger.warning(
        f"Process rank: {training_args.process_index}, device: {training_args.device}, "
        f"world size: {training_args.world_size}, pruning: {training_args.pruning_method}"
    )


# ----------------------------------------------------------------------------------------------------------
# Hub access: fail fast without network
# ----------------------------------------------------------------------------------------------------------


def hub_offline() -> bool:
    """Whether the user put the Hub off limits (`HF_HUB_OFFLINE`): then only cached files load. Read, never set."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE or datasets.config.HF_HUB_OFFLINE)


def require_hub(what: str, offline_hint: str) -> None:
    """Fail at once when `what` needs the Hub, `HF_HUB_OFFLINE` is unset and a quick probe of the endpoint fails.

    Without it `datasets` retries an unreachable Hub for about 23 s. The `ConnectionError` names the offline choice
    (`offline_hint`) and `HF_HUB_OFFLINE=1`, which loads what is already cached.
    """
    if hub_offline() or _hub_reachable():
        return
    raise ConnectionError(
        f"Cannot load {what} from the Hugging Face Hub: it is unreachable. Set HF_HUB_OFFLINE=1 to use only "
        f"cached files. {offline_hint}"
    )


@functools.cache
def _hub_reachable() -> bool:
    from huggingface_hub import constants
    from huggingface_hub.utils import get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT)
    except Exception as err:  # any transport failure: DNS, refused, timeout, proxy
        logger.warning(f"The Hugging Face Hub is unreachable ({err}).")
        return False
    return True


def load_hub_dataset(
    name: str, config_name: str | None, *, cache_dir: str | None, token: str | None, offline_hint: str
) -> DatasetDict:
    """`load_dataset(name, config_name)`; without the Hub, a `ConnectionError` that ends with `offline_hint`."""
    what = f"the dataset {name!r}{f' ({config_name})' if config_name else ''}"
    require_hub(what, offline_hint)
    try:
        return load_dataset(name, config_name, cache_dir=cache_dir, token=token)
    except Exception as err:
        if hub_offline() or isinstance(err, ConnectionError):
            raise ConnectionError(f"Cannot load {what} from the Hugging Face Hub: {err}. {offline_hint}") from err
        raise


def from_hub(loader: Any, name: str, *, offline_hint: str, **kwargs: Any) -> Any:
    """`loader.from_pretrained(name)`, naming the offline choice (`offline_hint`) when a Hub model cannot be
    reached."""
    if not os.path.isdir(name):
        require_hub(repr(name), offline_hint)
    try:
        return loader.from_pretrained(name, **kwargs)
    except OSError as err:
        if os.path.isdir(name) or not hub_offline():
            raise
        raise OSError(f"Cannot load {name!r} without the Hugging Face Hub: {err}\n{offline_hint}") from err


# ----------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------


def load_images(
    images: list[Any], size: tuple[int, int], input_normalization: tuple[float, float] | None = None
) -> torch.Tensor:
    """A batch of images as float32 `[N, 3, H, W]` in [0, 1], resized to `size` (bilinear, antialiased).

    Images may be PIL images or arrays (CHW or HWC, grey or RGB); arrays are in [0, 1] unless
    `input_normalization` `(mean, std)` says how they were normalised.
    """
    if hasattr(images[0], "convert"):  # PIL
        arrays = [np.array(image.convert("RGB"), dtype=np.uint8) for image in images]
        resized = [_resize(torch.from_numpy(a).permute(2, 0, 1).float().div_(255), size) for a in arrays]
        return torch.stack(resized)
    batch = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if batch.ndim == 3:  # (B, H, W) grey
        batch = batch.unsqueeze(1)
    if batch.shape[1] not in (1, 3) and batch.shape[-1] in (1, 3):  # channels last
        batch = batch.permute(0, 3, 1, 2)
    if input_normalization is not None:
        mean, std = input_normalization
        batch = batch * std + mean
    if batch.shape[1] == 1:
        batch = batch.expand(-1, 3, -1, -1)
    return _resize(batch, size)


def _resize(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(images.shape[-2:]) == tuple(size):
        return images.contiguous()
    single = images.ndim == 3
    out = F.interpolate(
        images[None] if single else images, size=tuple(size), mode="bilinear", align_corners=False, antialias=True
    )
    return out[0] if single else out


# ----------------------------------------------------------------------------------------------------------
# Training and reporting
# ----------------------------------------------------------------------------------------------------------


def train_and_save(trainer: EMPTrainer) -> Any:
    """`trainer.train()` (resuming from `--resume_from_checkpoint`; `true` or `last`: the latest checkpoint in
    output_dir), then save the model and the trainer state; returns the `TrainOutput`."""
    follow_free_cores(trainer)
    resume = trainer.args.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last"):
        resume = True
    train_result = trainer.train(resume_from_checkpoint=resume)
    trainer.save_model()
    trainer.save_state()
    return train_result


def full_data_steps(num_rows: int, args: EMPConfig, num_processes: int) -> int:
    """Optimizer steps of the same run without pruning (batches sharded as Accelerate does)."""
    if args.max_steps > 0:
        return args.max_steps
    counter = StepCounter(
        batch_size=args.per_device_train_batch_size,
        num_processes=num_processes,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        drop_last=args.dataloader_drop_last,
    )
    return counter.update_steps(num_rows) * int(args.num_train_epochs)


def pruning_metrics(trainer: EMPTrainer, full_steps: int) -> dict[str, Any]:
    """The realised saving, the optimizer steps (also of the same run on all the data) and the plan sizes."""
    state = trainer.pruning_state
    return {
        "realized_saving": state.realized_saving(),
        "optimizer_steps": trainer.state.global_step,
        "full_data_optimizer_steps": full_steps,
        "plan_sizes": state.epoch_plan_sizes,
    }


def pruning_summary(trainer: EMPTrainer, full_steps: int) -> list[str]:
    """The lines of the final summary about the pruning: method, plan sizes, realised saving, optimizer steps."""
    args, state = trainer.args, trainer.pruning_state
    return [
        f"method             {args.pruning_method} (prune_ratio {args.prune_ratio})",
        f"plan sizes         {state.epoch_plan_sizes} of {state.num_rows} rows",
        f"realised saving    {state.realized_saving():.1%} of the example visits",
        f"optimizer steps    {trainer.state.global_step} (full data: {full_steps})",
    ]


def print_summary(lines: list[str]) -> None:
    print("\n" + "=" * 72 + "\n" + "\n".join(lines) + "\n" + "=" * 72, flush=True)


def save_metrics(trainer: EMPTrainer, train_metrics: dict[str, Any], eval_metrics: dict[str, Any]) -> None:
    """Log and save (`train_results.json`, `eval_results.json`, `all_results.json`) the metrics; lists (the plan
    sizes) are saved but not logged."""
    trainer.log_metrics("train", {k: v for k, v in train_metrics.items() if not isinstance(v, list)})
    trainer.save_metrics("train", train_metrics)
    trainer.log_metrics("eval", eval_metrics)
    trainer.save_metrics("eval", eval_metrics)


def save_frequency_pictures(trainer: EMPTrainer, directory: str) -> list[str]:
    """The pruning pictures of `emp_hf.records.plots` (training-frequency histogram, ...), on the main process only."""
    if not trainer.is_world_process_zero():
        return []
    return [str(p) for p in save_pruning_plots(trainer.pruning_state, directory)]


def report(
    trainer: EMPTrainer,
    train_metrics: dict[str, Any],
    eval_metrics: dict[str, Any],
    *,
    title: str,
    full_steps: int,
    start: float,
    score_lines: list[str] | None = None,
) -> dict[str, Any]:
    """Print and save (`all_results.json`) the metrics, realised saving, steps and time; draw the histogram.

    The summary shows `score_lines`, by default one line per `eval_` score of `eval_metrics`.
    """
    train_metrics = {**train_metrics, **pruning_metrics(trainer, full_steps)}
    train_metrics["wall_clock_seconds"] = time.perf_counter() - start
    save_metrics(trainer, train_metrics, eval_metrics)
    pictures = save_frequency_pictures(trainer, trainer.args.output_dir)
    if trainer.is_world_process_zero():
        lines = [
            title,
            *pruning_summary(trainer, full_steps),
            f"wall-clock time    {train_metrics['wall_clock_seconds']:.1f} s "
            f"(training {train_metrics.get('train_runtime', float('nan')):.1f} s)",
        ]
        if score_lines is None:
            score_lines = [
                f"{k:<18} {v:.4f}" for k, v in eval_metrics.items() if k.startswith("eval_") and _is_score(k, v)
            ]
        lines += score_lines
        lines += [f"frequency plot     {p}" for p in pictures]
        lines.append(f"results            {os.path.join(trainer.args.output_dir, 'all_results.json')}")
        print_summary(lines)
    return {**train_metrics, **eval_metrics, "pictures": pictures}


def _is_score(key: str, value: Any) -> bool:
    skip = ("runtime", "per_second", "loss", "epoch", "samples")
    return isinstance(value, float) and not any(s in key for s in skip)
