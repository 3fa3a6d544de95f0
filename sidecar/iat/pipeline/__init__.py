"""Runs: planning, the runner, stages, ranking and the contact sheet."""
