"""Drift detection on the streams of a model version, through river."""
