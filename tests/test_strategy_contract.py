"""The strategy contract: `select`/`score` get the epoch's `EpochContext`, each strategy has one `StrategyTraits`
computed from its options, the registry refuses the former contract, and no code outside `emp_hf/strategies/`
decides by a method's name."""

from __future__ import annotations

import ast
import dataclasses
import pathlib

import pytest
import torch

import emp_hf
from emp_hf import EMPConfig, EMPTrainer, EpochContext, PruningStrategy, Selection, StrategyTraits
from emp_hf.core.sampler import EpochPlanner
from emp_hf.core.schedule import EpochSchedule
from emp_hf.core.tracker import PruningState
from emp_hf.strategies import STRATEGIES, PruningOptions, build_strategy, register_strategy
from emp_hf_dev.fixtures import make_args, make_bert, make_text_dataset

FORMER_FLAGS = (
    "uses_weights",
    "fixed_budget",
    "budget_at_most_num_keep",
    "default_anneal_fraction",
    "required_tables",
)


@pytest.fixture
def registered():
    """Register strategy classes for one test; the registry is restored after it."""
    names = []

    def add(cls):
        register_strategy(cls)
        names.append(cls.name)
        return cls

    yield add
    for name in names:
        del STRATEGIES[name]


class Recording(PruningStrategy):
    """Keeps the first `num_keep` rows and notes the context of every `score` and `select` call."""

    name = "recording_test"
    calls: list[tuple[str, EpochContext]] = []

    @classmethod
    def traits_for(cls, options):
        return StrategyTraits(required_tables=frozenset({"loss", "entropy", "score"}))

    def score(self, tables, context):
        self.calls.append(("score", context))
        return tables["loss"]

    def select(self, tables, num_keep, generator, context):
        self.calls.append(("select", context))
        assert num_keep == context.num_keep
        return Selection(rows=torch.arange(num_keep, device=tables["loss"].device))


# ---------------------------------------------------------------------------------------------- the context
def test_the_context_of_an_epoch_is_its_place_in_the_schedule():
    schedule = EpochSchedule(num_rows=10, num_epochs=8, prune_ratio=0.3, warmup_epochs=2, anneal_fraction=0.25)
    contexts = [EpochContext.of(schedule, epoch) for epoch in range(8)]
    assert [c.phase for c in contexts] == ["warmup"] * 2 + ["pruned"] * 4 + ["anneal"] * 2
    assert [c.epochs_since_warmup for c in contexts] == list(range(-2, 6))
    assert {(c.num_epochs, c.num_rows, c.num_keep, c.warmup_epochs, c.anneal_epochs) for c in contexts} == {
        (8, 10, 7, 2, 2)
    }
    with pytest.raises(dataclasses.FrozenInstanceError):
        contexts[0].epoch = 3


def test_the_planner_hands_each_epoch_its_context():
    Recording.calls = []
    n = 12
    state = PruningState(num_rows=n, track=Recording().traits.required_tables)
    schedule = EpochSchedule(num_rows=n, num_epochs=5, prune_ratio=0.5, warmup_epochs=1, anneal_fraction=0.2)
    planner = EpochPlanner(state, Recording(), schedule, seed=0)
    state.update(torch.arange(n), torch.rand(n), torch.rand(n), epoch=0)
    for epoch in range(5):
        planner.plan(epoch)
    assert [(kind, c.epoch, c.phase) for kind, c in Recording.calls] == [
        ("score", 0, "warmup"),
        ("score", 1, "pruned"),
        ("select", 1, "pruned"),
        ("score", 2, "pruned"),
        ("select", 2, "pruned"),
        ("score", 3, "pruned"),
        ("select", 3, "pruned"),
        ("score", 4, "anneal"),
    ]
    assert all(c == EpochContext.of(schedule, c.epoch) for _, c in Recording.calls)
    assert state.epoch_plan_sizes == [n, 6, 6, 6, n]


def test_a_registered_strategy_sees_each_epoch_of_a_training_run(tmp_path, registered):
    registered(Recording)
    Recording.calls = []
    args = make_args(
        tmp_path, pruning_method=Recording.name, num_train_epochs=4, pruning_anneal_fraction=0.25, prune_ratio=0.5
    )
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=make_text_dataset(32))
    trainer.train()
    selects = [(c.epoch, c.phase, c.num_epochs, c.num_keep) for kind, c in Recording.calls if kind == "select"]
    assert selects == [(1, "pruned", 4, 16), (2, "pruned", 4, 16)]
    assert [(c.epoch, c.phase) for kind, c in Recording.calls if kind == "score"] == [
        (0, "warmup"),
        (1, "pruned"),
        (2, "pruned"),
        (3, "anneal"),
    ]
    plans = trainer.pruning_state.plans
    assert sorted(plans[1].tolist()) == sorted(plans[2].tolist()) == list(range(16))  # the rows select chose


# ---------------------------------------------------------------------------------------------- the traits
@pytest.mark.parametrize(
    ("name", "options", "fixed_budget", "uses_weights"),
    [
        ("seta", {}, True, False),
        ("seta", {"seta_grouping": "kmeans"}, False, False),
        ("emp", {}, True, False),
        ("emp", {"seta_grouping": "kmeans"}, True, False),  # 'sample' does not read the grouping
        ("emp", {"emp_selection": "window", "seta_grouping": "kmeans"}, False, False),
        ("emp", {"emp_selection": "soft"}, True, True),
        ("infobatch", {}, False, True),
        ("infobatch", {"infobatch_match_budget": True}, True, True),
    ],
)
def test_traits_follow_the_options(name, options, fixed_budget, uses_weights):
    strategy = build_strategy(name, PruningOptions(**options))
    traits = strategy.traits
    assert (traits.fixed_budget, traits.uses_weights) == (fixed_budget, uses_weights)
    assert ("weight" in traits.required_tables) == uses_weights
    assert STRATEGIES[name].traits_for(strategy.options) == traits  # what the config asks before building it


def test_a_score_ranks_by_entropy_where_its_options_weigh_it():
    ranks = {
        ("emp", 1.0): True,
        ("emp", 0.0): False,
        ("small_loss", 1.0): True,
        ("small_loss", 0.0): False,
        ("ucb", 1.0): False,
    }
    for (name, weight), expected in ranks.items():
        options = PruningOptions(memory_weight=weight, small_loss_memory_weight=weight)
        assert build_strategy(name, options).traits.ranks_by_entropy == expected, (name, weight)


def test_each_strategy_declares_its_traits_in_one_value():
    for name, cls in STRATEGIES.items():
        for flag in (*FORMER_FLAGS, "set_epoch"):
            assert not hasattr(cls, flag), f"{name}.{flag}"
        traits = build_strategy(name, PruningOptions()).traits
        assert isinstance(traits, StrategyTraits)
        assert traits.prunes == (name != "none")
    assert STRATEGIES["infobatch"].traits_for(PruningOptions()).default_anneal_fraction == 0.125
    with pytest.raises(ValueError, match="unknown tables"):
        StrategyTraits(required_tables=frozenset({"loss", "losss"}))


def test_the_config_asks_the_traits_not_the_name(tmp_path, registered):
    @registered
    class Observer(Recording):
        """A control arm of its own: never prunes, anneals by default."""

        name = "observer_test"

        @classmethod
        def traits_for(cls, options):
            return StrategyTraits(prunes=False, default_anneal_fraction=0.25)

    config = EMPConfig(output_dir=str(tmp_path), pruning_method=Observer.name, auto_find_batch_size=True)
    assert (config.prune_ratio, config.pruning_anneal_fraction) == (0.0, 0.25)
    EMPConfig(output_dir=str(tmp_path), pruning_method=Observer.name, num_train_epochs=1.5)  # as Trainer takes
    with pytest.raises(ValueError, match="pruning_method='observer_test' never prunes"):
        EMPConfig(output_dir=str(tmp_path), pruning_method=Observer.name, prune_ratio=0.3)
    with pytest.raises(ValueError, match="auto_find_batch_size=True is not supported"):
        EMPConfig(output_dir=str(tmp_path), pruning_method="random", auto_find_batch_size=True)


# ---------------------------------------------------------------------------------------------- the registry
def test_the_registry_refuses_a_strategy_written_to_the_former_contract(registered):
    class Flagged(Recording):
        name = "flagged_test"
        uses_weights = True

    class Stateful(Recording):
        name = "stateful_test"

        def set_epoch(self, epoch, schedule):
            self.epoch = epoch

    class Blind(PruningStrategy):
        name = "blind_test"

        def select(self, tables, num_keep, generator):
            return Selection(rows=torch.arange(num_keep))

    class Unbound(Recording):
        name = "unbound_test"

        def traits_for(self, options):
            return StrategyTraits()

    refusals = {
        Flagged: r"declares uses_weights as attributes.*StrategyTraits\(uses_weights=\.\.\.\)",
        Stateful: r"set_epoch is no longer called",
        Blind: r"Blind.select must take \(tables, num_keep, generator, context\)",
        Unbound: r"traits_for must be a @classmethod",
    }
    for cls, message in refusals.items():
        with pytest.raises(TypeError, match=message):
            register_strategy(cls)
        assert cls.name not in STRATEGIES


# ---------------------------------------------------------------------------------------------- no method names
def _method_name_comparisons(source: str, names: set[str]) -> list[str]:
    """Every comparison in `source` of a value with a string literal that is a registered method's name (`x ==
    "none"`, `x in ("emp", "seta")`); comments and docstrings are not code, so they never count."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Compare):
            continue
        literals = []
        for operand in (node.left, *node.comparators):
            elements = operand.elts if isinstance(operand, (ast.Tuple, ast.List, ast.Set)) else [operand]
            literals += [e.value for e in elements if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        if names & set(literals):
            found.append(f"line {node.lineno}: {ast.unparse(node)}")
    return found


def test_the_check_finds_name_comparisons_and_ignores_comments():
    source = (
        'if args.pruning_method != "none":  # pruning_method == "emp" in a comment\n'
        '    """A docstring: strategy.name == "seta"."""\n'
        'ok = method in ("infobatch", "seta") or order == "sequential"\n'
    )
    assert _method_name_comparisons(source, set(STRATEGIES)) == [
        "line 1: args.pruning_method != 'none'",
        "line 3: method in ('infobatch', 'seta')",
    ]


def test_no_module_outside_the_strategies_decides_by_a_method_name():
    package = pathlib.Path(emp_hf.__file__).parent
    strategies = package / "strategies"
    modules = [path for path in sorted(package.rglob("*.py")) if strategies not in path.parents]
    assert len(modules) > 10
    found = {
        str(path.relative_to(package)): hits
        for path in modules
        if (hits := _method_name_comparisons(path.read_text(), set(STRATEGIES)))
    }
    assert found == {}, "ask strategy.traits (or the strategy class) instead of comparing method names"
