"""Overrides the recipe tests share."""

QUIET = ["run.log_with=none"]  # no TensorBoard files in test runs
