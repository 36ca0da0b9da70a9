"""emp_hf: dynamic data pruning (EMP, InfoBatch, UCB, epsilon-greedy, random) for the Hugging Face Trainer."""

from .config import EMPConfig
from .data import RowIndexCollator, RowIndexedDataset, add_row_index
from .record import PruningRecord, export_pruning_record, load_pruning_record, select_rows
from .strategies import STRATEGIES, PruningOptions, PruningStrategy, Selection, register_strategy
from .tracker import PruningState
from .trainer import EMPTrainer

__version__ = "0.1.0"

__all__ = [
    "STRATEGIES",
    "EMPConfig",
    "EMPTrainer",
    "PruningOptions",
    "PruningRecord",
    "PruningState",
    "PruningStrategy",
    "RowIndexCollator",
    "RowIndexedDataset",
    "Selection",
    "add_row_index",
    "export_pruning_record",
    "load_pruning_record",
    "register_strategy",
    "select_rows",
]
