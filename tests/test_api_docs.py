"""docs/api.md's examples, run in order as written: the Python API stays what the page says.

Its FID example runs on the stand-in Inception network (conftest.py's fake_inception): the
weights are not on this machine, and the test is of the API, not of the network."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

PAGE = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_the_api_page_runs_as_written(aigc_home, fake_inception, tmp_path, monkeypatch, capsys, one_torch_thread):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(), flags=re.S)
    assert len(blocks) >= 6, "the page lost its examples"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("AIGC_INCEPTION_WEIGHTS", fake_inception.weights)  # named, never loaded
    namespace: dict = {}
    for i, block in enumerate(blocks):
        try:
            exec(compile(block, f"docs/api.md example {i + 1}", "exec"), namespace)
        except Exception as e:  # pragma: no cover - the failure is the message
            pytest.fail(f"docs/api.md example {i + 1} failed: {type(e).__name__}: {e}\n{block}")
    out = capsys.readouterr().out
    assert "run1 completed" in out  # what the first example says it prints
    assert "torch.Size([1, 8, 1, 28, 28]) slerp" in out
    assert (tmp_path / "digits-gan.onnx").is_file()
    assert "['head']" in out and (tmp_path / "adapter/adapter_config.json").is_file()  # the LoRA example
    assert "grpo " in out  # the tuning example
