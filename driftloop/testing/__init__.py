"""Helpers for testing pipelines built on driftloop: stacks on free ports, tiny models."""
