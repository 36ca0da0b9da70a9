"""emp_hf_dev: what the recipes, benchmarks and tests of the emp_hf repository share; never shipped with emp_hf.

- `offline_data`: the offline datasets and text model that `make setup` installs.
- `recipe_runtime`: the recipes' shared runtime (arguments, torch threads, logging, Hub access, the report).
- `fixtures`: tiny random models and in-memory data for the tests.
- `launching`: run a script in fresh processes (`torchrun`, `accelerate launch`) with a hard timeout.
"""
