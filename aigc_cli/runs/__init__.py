"""Run store: every run is a folder of JSON plus safetensors, never pickle."""

from aigc_cli.runs.store import Run, create_run, list_runs, resolve_run

__all__ = ["Run", "create_run", "list_runs", "resolve_run"]
