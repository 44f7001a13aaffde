"""Typer apps and rendering. Commands are thin: parse, call the core, render."""
