"""Strategy options: one dataclass per strategy, each field defined once, and a registered strategy's own options."""

import dataclasses
import json
from dataclasses import dataclass, field

import pytest
import torch
from transformers import HfArgumentParser

from emp_hf import (
    EMPConfig,
    EMPTrainer,
    PruningStrategy,
    Selection,
    StrategyOptions,
    StrategyTraits,
    register_strategy,
)
from emp_hf.core.tracker import PruningState
from emp_hf.integration.checkpoint import load_pruning_state, save_pruning_state
from emp_hf.strategies import STRATEGIES, PruningOptions, build_strategy
from emp_hf.strategies.base import check_number
from emp_hf_dev.fixtures import make_args, make_bert


@dataclass
class SharpnessOptions(StrategyOptions):
    sharpness: float = field(default=2.0, metadata={"help": "Exponent of the loss."})
    label: str | None = field(default=None, metadata={"help": "A name for the logs."})

    def validate_options(self) -> None:
        super().validate_options()
        check_number(self, "sharpness", 0.0, 10.0, low_open=True)


class HardestRows(PruningStrategy):
    """Keeps the rows with the highest `loss ** sharpness`."""

    name = "hardest_rows_test"
    options_class = SharpnessOptions

    @classmethod
    def traits_for(cls, options):
        return StrategyTraits(required_tables=frozenset({"loss", "entropy", "score"}))

    def score(self, tables, context):
        return tables["loss"] ** self.options.sharpness

    def select(self, tables, num_keep, generator, context):
        score = torch.nan_to_num(self.score(tables, context), nan=float("inf"))
        return Selection(rows=torch.topk(score, num_keep).indices)


@pytest.fixture
def hardest_rows():
    register_strategy(HardestRows)
    yield HardestRows
    del STRATEGIES[HardestRows.name]


def test_each_builtin_option_is_defined_once_and_is_a_config_field():
    config_fields = EMPConfig.__dataclass_fields__
    for name, strategy in STRATEGIES.items():
        for option in dataclasses.fields(strategy.options_class):
            if option.name == "prune_ratio":  # the config's is None until the method's default is known
                continue
            # the very Field object the strategy's options class defines: same default, same help
            assert config_fields[option.name] is option, f"{name}: {option.name}"
            assert option.metadata.get("help"), f"{strategy.options_class.__name__}.{option.name} has no help"
    assert {f.name for f in dataclasses.fields(PruningOptions)} <= set(config_fields)


@pytest.mark.parametrize("method", ["emp", "seta", "ucb", "infobatch", "epsilon_greedy", "random", "none"])
def test_the_config_hands_each_strategy_its_own_options(tmp_path, method):
    config = EMPConfig(
        output_dir=str(tmp_path), pruning_method=method, epsilon=0.3, seta_num_groups=7, ucb_c=2.5, memory_weight=0.2
    )
    options = config.strategy_options
    assert type(options) is STRATEGIES[method].options_class
    expected = {"epsilon": 0.3, "seta_num_groups": 7, "ucb_c": 2.5, "memory_weight": 0.2, "prune_ratio": 0.5}
    if method == "none":
        expected["prune_ratio"] = 0.0
    for name, value in dataclasses.asdict(options).items():
        assert value == expected.get(name, getattr(config, name)), name
    assert build_strategy(method, config).options == options


def test_options_are_validated_where_they_are_defined():
    with pytest.raises(ValueError, match=r"EMPOptions.emp_temperature=0 is invalid: it must be a number in \(0, "):
        build_strategy("emp", emp_temperature=0)
    with pytest.raises(ValueError, match=r"SeTaOptions.seta_window_scale=0.1 is invalid: round\(5 \* 0.1\) = 0"):
        build_strategy("seta", seta_window_scale=0.1)
    with pytest.raises(TypeError, match=r"UCBOptions has no option emp_selection; its options are \["):
        build_strategy("ucb", emp_selection="topk")
    assert build_strategy("emp", PruningOptions(epsilon=0.4), emp_selection="topk").options.epsilon == 0.4


def test_a_strategy_without_an_options_dataclass_is_refused():
    class Loose(PruningStrategy):
        name = "loose_test"
        options_class = dict

        def select(self, tables, num_keep, generator, context):
            raise NotImplementedError

    with pytest.raises(TypeError, match="options_class must be a @dataclass subclass of StrategyOptions"):
        register_strategy(Loose)
    assert "loose_test" not in STRATEGIES


def test_a_registered_strategy_takes_its_options_from_pruning_kwargs(tmp_path, hardest_rows):
    parser = HfArgumentParser(EMPConfig)
    argv = ["--output_dir", str(tmp_path), "--pruning_method", HardestRows.name]
    (config,) = parser.parse_args_into_dataclasses([*argv, "--pruning_kwargs", json.dumps({"sharpness": 3.0})])
    assert config.pruning_kwargs == {"sharpness": 3.0}
    assert config.strategy_options == SharpnessOptions(prune_ratio=0.5, sharpness=3.0, label=None)
    (default,) = parser.parse_args_into_dataclasses(argv)
    assert default.strategy_options.sharpness == 2.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"sharpness": 0}, r"SharpnessOptions.sharpness=0 is invalid: it must be a number in \(0, 10\]"),
        ({"sharpnes": 1.0}, r"has no option 'sharpnes'; its own options are \['label', 'sharpness'\]"),
        ({"prune_ratio": 0.2}, r"'prune_ratio' is a config field: set prune_ratio= \(--prune_ratio\)"),
        ("{not json", r"pruning_kwargs='\{not json' is invalid: it is not a JSON object"),
        ([1, 2], r"pruning_kwargs=\[1, 2\] is invalid: it must be a dict"),
    ],
)
def test_bad_pruning_kwargs_fail_when_the_config_is_built(tmp_path, hardest_rows, kwargs, message):
    with pytest.raises(ValueError, match=message):
        EMPConfig(output_dir=str(tmp_path), pruning_method=HardestRows.name, pruning_kwargs=kwargs)


def test_pruning_kwargs_of_a_builtin_strategy_point_to_the_flag(tmp_path):
    with pytest.raises(ValueError, match=r"'emp_temperature' is a config field: set emp_temperature="):
        EMPConfig(output_dir=str(tmp_path), pruning_method="emp", pruning_kwargs={"emp_temperature": 0.5})
    with pytest.raises(ValueError, match=r"UCBOptions \('ucb'\) has no option 'x'; it has none beyond the config"):
        EMPConfig(output_dir=str(tmp_path), pruning_method="ucb", pruning_kwargs={"x": 1})


def test_a_config_class_can_make_a_registered_strategy_options_flags(tmp_path, hardest_rows):
    @dataclass(repr=False)
    class SharpConfig(SharpnessOptions, EMPConfig):
        pass

    argv = ["--output_dir", str(tmp_path), "--pruning_method", HardestRows.name, "--sharpness", "4"]
    (config,) = HfArgumentParser(SharpConfig).parse_args_into_dataclasses(argv)
    assert config.strategy_options.sharpness == 4.0
    with pytest.raises(ValueError, match=r"SharpConfig.sharpness=11.0 is invalid"):
        SharpConfig(output_dir=str(tmp_path), pruning_method=HardestRows.name, sharpness=11.0)


def test_a_registered_strategy_trains_records_and_resumes_with_its_options(tmp_path, text_dataset, hardest_rows):
    def args(sharpness):
        return make_args(
            tmp_path,
            pruning_method=HardestRows.name,
            pruning_kwargs={"sharpness": sharpness},
            save_strategy="steps",
            save_steps=5,
            num_train_epochs=2,
        )

    trainer = EMPTrainer(model=make_bert(), args=args(3.0), train_dataset=text_dataset)
    trainer.train()
    assert trainer.strategy.options.sharpness == 3.0
    assert trainer.pruning_state.metadata["sharpness"] == 3.0
    assert trainer.pruning_state.epoch_plan_sizes == [96, 48]
    checkpoint = str(tmp_path / "out" / "checkpoint-5")
    EMPTrainer(model=make_bert(), args=args(3.0), train_dataset=text_dataset).train(resume_from_checkpoint=checkpoint)
    with pytest.raises(ValueError, match="sharpness: checkpoint 3.0, now 1.0"):
        EMPTrainer(model=make_bert(), args=args(1.0), train_dataset=text_dataset).train(checkpoint)


def test_a_checkpoint_holding_every_builtin_option_still_resumes(tmp_path, text_dataset):
    """Checkpoints written before options were per strategy hold every `PruningOptions` field: the others'
    options are not this strategy's, so they are not compared."""
    args = make_args(tmp_path, save_strategy="steps", save_steps=5, num_train_epochs=2, pruning_method="seta")
    EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset).train()
    checkpoint = str(tmp_path / "out" / "checkpoint-5")
    old = PruningState(len(text_dataset))
    load_pruning_state(old, checkpoint)
    assert "ucb_c" not in old.metadata and old.metadata["seta_num_groups"] == 5
    old.metadata.update(dataclasses.asdict(PruningOptions(ucb_c=7.0, emp_selection="topk")))
    save_pruning_state(old, checkpoint)
    trainer = EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset)
    trainer.train(resume_from_checkpoint=checkpoint)
    assert "ucb_c" not in trainer.pruning_state.metadata


def test_the_options_table_in_the_docs_names_every_pruning_option():
    from pathlib import Path

    from transformers import TrainingArguments

    table = (Path(__file__).parent.parent / "docs" / "methods.md").read_text()
    base = {f.name for f in dataclasses.fields(TrainingArguments)}
    hub_and_resume = ("push_pruning_record", "pruning_record_", "ignore_pruning_state_mismatch")
    for option in dataclasses.fields(EMPConfig):
        if option.name in base or option.name.startswith(hub_and_resume):
            continue
        assert f"| `{option.name}` |" in table, f"docs/methods.md's options table has no row for {option.name}"


def test_options_that_a_checkpoint_cannot_store_are_refused(tmp_path, hardest_rows):
    with pytest.raises(ValueError, match=r"the options of pruning_method='hardest_rows_test' .* must be JSON values"):
        EMPConfig(output_dir=str(tmp_path), pruning_method=HardestRows.name, pruning_kwargs={"label": object()})


def test_an_option_that_shadows_a_config_field_with_another_default_is_refused(tmp_path):
    @dataclass
    class GreedyOptions(StrategyOptions):
        epsilon: float = 0.5  # EMPConfig.epsilon defaults to 0.1: the strategy would silently get 0.1

    class Greedy(HardestRows):
        name = "greedy_test"
        options_class = GreedyOptions

    register_strategy(Greedy)
    try:
        with pytest.raises(
            ValueError, match=r"GreedyOptions.epsilon defaults to 0.5, but it is also the config field"
        ):
            EMPConfig(output_dir=str(tmp_path), pruning_method=Greedy.name)
    finally:
        del STRATEGIES[Greedy.name]


# ----------------------------------------------------------------------------------------------------------
# EMPArgumentParser: a config mistake is one argparse-style error line
# ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("how", "values"),
    [
        ("flags", ["--pruning_method", "emp_"]),
        ("dict", {"pruning_method": "emp_"}),
        ("json", {"pruning_method": "emp_"}),
        ("yaml", {"pruning_method": "emp_"}),
    ],
)
def test_the_argument_parser_reports_a_config_mistake_in_one_line(tmp_path, capsys, how, values):
    from emp_hf.integration.config import EMPArgumentParser

    parser = EMPArgumentParser(EMPConfig, prog="train.py")
    with pytest.raises(SystemExit) as exit_info:
        if how == "flags":
            parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), *values])
        elif how == "dict":
            parser.parse_dict({"output_dir": str(tmp_path), **values})
        else:
            path = tmp_path / f"args.{how}"
            path.write_text(json.dumps({"output_dir": str(tmp_path), **values}))  # JSON is YAML too
            getattr(parser, f"parse_{how}_file")(str(path))
    assert exit_info.value.code == 2  # as argparse exits on a bad flag
    assert capsys.readouterr().err == (
        f"train.py: error: EMPConfig.pruning_method='emp_' is invalid: choose one of {sorted(STRATEGIES)}.\n"
    )
    (config,) = parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--prune_ratio", "0.3"])
    assert isinstance(config, EMPConfig) and config.prune_ratio == 0.3  # what HfArgumentParser returns


def test_argument_errors_wraps_any_parser(tmp_path, capsys):
    from emp_hf.integration.config import argument_errors

    parser = HfArgumentParser(EMPConfig, prog="train.py")
    with pytest.raises(SystemExit), argument_errors(parser):
        parser.parse_args_into_dataclasses(["--output_dir", str(tmp_path), "--prune_ratio", "1.5"])
    assert (
        capsys.readouterr().err
        == "train.py: error: EMPConfig.prune_ratio=1.5 is invalid: it must be a number in [0, 1).\n"
    )


# ----------------------------------------------------------------------------------------------------------
# dataloader_pin_memory: pinned where an accelerator can use it, so a CPU run does not warn
# ----------------------------------------------------------------------------------------------------------


def _has_accelerator() -> bool:
    return torch.accelerator.is_available() if hasattr(torch, "accelerator") else torch.cuda.is_available()


def test_pin_memory_defaults_to_whether_an_accelerator_is_there(tmp_path):
    from emp_hf.integration.seq2seq import EMPSeq2SeqConfig

    assert EMPConfig(output_dir=str(tmp_path)).dataloader_pin_memory is _has_accelerator()
    assert EMPSeq2SeqConfig(output_dir=str(tmp_path)).dataloader_pin_memory is _has_accelerator()
    assert EMPConfig(output_dir=str(tmp_path), dataloader_pin_memory=True).dataloader_pin_memory is True
    assert EMPConfig(output_dir=str(tmp_path), dataloader_pin_memory=False).dataloader_pin_memory is False
    (config,) = HfArgumentParser(EMPConfig).parse_args_into_dataclasses(["--output_dir", str(tmp_path)])
    assert config.dataloader_pin_memory is _has_accelerator()
    (config,) = HfArgumentParser(EMPConfig).parse_args_into_dataclasses(
        ["--output_dir", str(tmp_path), "--dataloader_pin_memory", "true"]
    )
    assert config.dataloader_pin_memory is True


@pytest.mark.skipif(_has_accelerator(), reason="pinning is used where an accelerator is present")
@pytest.mark.parametrize("method", ["none", "emp"])
def test_a_cpu_run_does_not_warn_about_pin_memory(tmp_path, text_dataset, recwarn, method):
    args = make_args(tmp_path, pruning_method=method, prune_ratio=None, num_train_epochs=2, use_cpu=False)
    EMPTrainer(model=make_bert(), args=args, train_dataset=text_dataset).train()
    assert not [w for w in recwarn if "pin_memory" in str(w.message)]
