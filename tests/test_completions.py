"""The shipped completion scripts are the ones the CLI generates today."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FILES = {"bash": "aigc.bash", "zsh": "_aigc", "fish": "aigc.fish"}


@pytest.mark.parametrize("shell", sorted(FILES))
def test_completion_script_is_current(shell):
    env = {**os.environ, "_AIGC_COMPLETE": f"source_{shell}"}
    out = subprocess.run([sys.executable, "-m", "aigc_cli"], env=env, capture_output=True, text=True)
    # `python -m aigc_cli` names itself aigc too: the console script and module give the same text.
    assert out.returncode == 0
    shipped = (ROOT / "completions" / FILES[shell]).read_text()
    assert out.stdout == shipped, f"regenerate: _AIGC_COMPLETE=source_{shell} aigc > completions/{FILES[shell]}"


def test_completion_answers_subcommands():
    env = {**os.environ, "_AIGC_COMPLETE": "complete_bash", "COMP_WORDS": "aigc tr", "COMP_CWORD": "1"}
    out = subprocess.run([sys.executable, "-m", "aigc_cli"], env=env, capture_output=True, text=True)
    assert "train" in out.stdout.split()
