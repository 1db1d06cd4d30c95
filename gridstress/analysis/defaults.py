"""Defaults of the analysis commands, in one place (no heavy imports: the CLI
reads them to build its options)."""

#: The frontier's variable and threshold: the smallest deflation at which the
#: book loses more than 1% of its principal.
FRONTIER_VAR = "loss_rate"
FRONTIER_THRESHOLD = 0.01
