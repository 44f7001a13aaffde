"""Run store: every run is a folder of JSON plus safetensors, never pickle."""

from aigc_cli.runs.store import Run, create_run, home, list_runs, resolve_run, runs_root

__all__ = ["Run", "create_run", "home", "list_runs", "resolve_run", "runs_root"]
