"""The pruning core (torch only): per-row tables, epoch plans and their sampler, the step budget."""
