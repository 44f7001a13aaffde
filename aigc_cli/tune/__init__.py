"""Tuning a trained run against a reward or preferences (issue 32)."""
