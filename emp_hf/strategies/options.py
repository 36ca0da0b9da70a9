"""`PruningOptions`: the options of every built-in strategy, in one dataclass.

Each option is defined once, in the options class of the strategy that reads it (`EMPOptions`, `SeTaOptions`,
`EpsilonGreedyOptions`, `UCBOptions`, `InfoBatchOptions`,
`SmallLossOptions`). `PruningOptions` inherits them all, and
`PruningArguments` inherits `PruningOptions`, so every built-in option is a config field and a command-line flag.
"""

from __future__ import annotations

from dataclasses import dataclass

from .emp import EMPOptions
from .infobatch import InfoBatchOptions
from .small_loss import SmallLossOptions
from .ucb import UCBOptions


@dataclass
class PruningOptions(EMPOptions, UCBOptions, InfoBatchOptions, SmallLossOptions):
    """Every built-in strategy's options; a strategy built from it takes the fields of its own `options_class`."""
