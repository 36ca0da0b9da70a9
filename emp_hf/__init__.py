"""emp_hf: dynamic data pruning (EMP, InfoBatch, UCB, epsilon-greedy, random) for the Hugging Face Trainer."""

from .core.tracker import PruningState
from .integration.config import EMPArgumentParser, EMPConfig, PruningArguments, argument_errors
from .integration.data import RowIndexCollator, RowIndexedDataset, add_row_index
from .integration.seq2seq import EMPSeq2SeqConfig, EMPSeq2SeqTrainer
from .integration.trainer import EMPTrainer, PruningMixin
from .records.export import export_pruning_record, save_pruning_record
from .records.load import load_pruning_record, select_rows
from .records.record import DatasetMismatchError, PruningRecord, RecordFormatError
from .strategies import (
    STRATEGIES,
    EpochContext,
    PruningOptions,
    PruningStrategy,
    Selection,
    StrategyOptions,
    StrategyTraits,
    register_strategy,
)
from .version import __version__ as __version__

_TRL_PAIR = ("EMPSFTConfig", "EMPSFTTrainer")


def __getattr__(name: str):
    if name in _TRL_PAIR:  # TRL is an optional extra: import it only when asked for
        from .integration import sft

        return getattr(sft, name)
    raise AttributeError(f"module 'emp_hf' has no attribute {name!r}")


__all__ = [
    "STRATEGIES",
    "DatasetMismatchError",
    "EMPArgumentParser",
    "EMPConfig",
    "EMPSFTConfig",
    "EMPSFTTrainer",
    "EMPSeq2SeqConfig",
    "EMPSeq2SeqTrainer",
    "EMPTrainer",
    "EpochContext",
    "PruningArguments",
    "PruningMixin",
    "PruningOptions",
    "PruningRecord",
    "PruningState",
    "PruningStrategy",
    "RecordFormatError",
    "RowIndexCollator",
    "RowIndexedDataset",
    "Selection",
    "StrategyOptions",
    "StrategyTraits",
    "add_row_index",
    "argument_errors",
    "export_pruning_record",
    "load_pruning_record",
    "register_strategy",
    "save_pruning_record",
    "select_rows",
]
