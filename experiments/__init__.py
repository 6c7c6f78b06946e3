"""Experiment scripts, each run as `python -m experiments.NAME`."""
