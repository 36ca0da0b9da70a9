"""The Trainer integration: the mixin and its configs, per-example statistics, checks, checkpoints."""
