"""The engine: nothing in here imports typer or rich."""
