"""Rewards for ``aigc tune`` (aigc_cli/tune/rewards.py): each kind on text and images, and each way
a reward can fail as one line naming it. Commands are small Python scripts run via sys.executable."""

import shlex
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from aigc_cli.core.options import flag
from aigc_cli.tune.rewards import RewardError, check_scores, list_rewards, load_reward

TEXTS = ["hello", "xyz", "EEE", ""]
PROMPTS = ["p0", "p1", "p2", "p3"]


def images(n=3, channels=3, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 8, 8, channels), dtype=np.uint8)


def fails(*words, render=False):
    """A checker: the RewardError is one line holding every word (options spelled as flags with
    ``render``, as the CLI shows them)."""

    def check(call):
        with pytest.raises(RewardError) as exc:
            call()
        text = exc.value.render(flag) if render else str(exc.value)
        assert len(text.splitlines()) == 1, text
        for w in words:
            assert w in text, text
        return text

    return check


def write(tmp_path, name, source):
    path = tmp_path / name
    path.write_text(source)
    return path


def command(script, *args):
    return shlex.join([sys.executable, str(script), *map(str, args)])


# -- FILE.py:FUNCTION ----------------------------------------------------------------------------

REWARDS = '''
import numpy as np

def no_e(samples):
    return [float(-s.lower().count("e")) for s in samples]

def with_prompts(samples, prompts):
    return [float(len(p)) for p in prompts]

def trl(prompts, completions, **kwargs):
    return [len(c) + len(p) for p, c in zip(prompts, completions)]

def anything(samples, **kwargs):
    return [float(len(kwargs))] * len(samples)

def brightness(samples):
    return np.asarray(samples, dtype=np.float64).mean(axis=(1, 2, 3))

def with_labels(samples, labels=None):
    return [-1.0 if labels is None else float(l) for l in labels or [0] * len(samples)]

def raises(samples):
    raise ValueError("no good\\nsecond line")

def nan_third(samples):
    return [0.0, 0.0, float("nan")] + [0.0] * (len(samples) - 3)

def edits(samples):
    samples[0, 0, 0, 0] = 1
    return [0.0] * len(samples)

not_callable = 3
'''


def test_function_on_text_and_keywords(tmp_path):
    path = write(tmp_path, "score.py", REWARDS)
    assert load_reward(f"{path}:no_e", None, "text")(TEXTS, PROMPTS) == [-1.0, 0.0, -3.0, 0.0]
    # prompts go only to a function that declares them; TRL's (prompts, completions) by keyword
    assert load_reward(f"{path}:with_prompts", None, "text")(TEXTS, PROMPTS) == [2.0] * 4
    assert load_reward(f"{path}:trl", None, "text")(["ab"], ["p"]) == [3.0]
    assert load_reward(f"{path}:anything", None, "text")(TEXTS, PROMPTS) == [1.0] * 4  # **kwargs: prompts


def test_function_on_images_and_labels(tmp_path):
    path = write(tmp_path, "score.py", REWARDS)
    x = images()
    assert load_reward(f"{path}:brightness", None, "images")(x) == pytest.approx(x.mean(axis=(1, 2, 3)))
    assert load_reward(f"{path}:with_labels", None, "images")(x, labels=[1, 2, 3]) == [1.0, 2.0, 3.0]
    assert load_reward(f"{path}:with_labels", None, "images")(x) == [-1.0] * 3
    before = x.copy()
    fails("reward", "edits raised ValueError", "read-only")(lambda: load_reward(f"{path}:edits", None, "images")(x))
    assert (x == before).all()


def test_function_gets_no_keyword_it_does_not_declare(tmp_path):
    path = write(tmp_path, "strict.py", "def f(samples):\n    return [0.0] * len(samples)\n")
    assert load_reward(f"{path}:f", None, "text")(TEXTS, PROMPTS) == [0.0] * 4  # a prompts= would raise TypeError
    assert load_reward(f"{path}:f", None, "images")(images(), labels=[0, 1, 2]) == [0.0] * 3


def test_path_with_colons_and_main_block(tmp_path):
    folder = tmp_path / "a:b"
    folder.mkdir()
    path = write(folder, "s.py", "def f(x):\n    return [1] * len(x)\nif __name__ == '__main__':\n    raise SystemExit(3)\n")
    reward = load_reward(f"{path}:f", None, "text")
    assert reward(["a"]) == [1.0] and reward.name == f"{path}:f" and reward.scores == "text"
    reward.close()
    noext = write(folder, "reward", "def f(x):\n    return [2] * len(x)\n")  # a path with a folder: a file
    assert load_reward(f"{noext}:f", None, "text")(["a"]) == [2.0]


def test_function_load_failures(tmp_path):
    path = write(tmp_path, "score.py", REWARDS)

    def load(name, source):
        return lambda: load_reward(f"{write(tmp_path, name, source)}:f", None, "text")

    fails("no such file", "missing.py")(lambda: load_reward(f"{tmp_path}/missing.py:f", None, "text"))
    fails(str(tmp_path), "a folder")(lambda: load_reward(f"{tmp_path}/:f", None, "text"))
    fails("syntax error", "bad.py", "line 1")(load("bad.py", "def (:"))
    fails("boom.py", "raised KeyError on import", "'k'")(load("boom.py", "import os\n{}['k']"))
    fails("exits.py", "raised SystemExit on import")(load("exits.py", "raise SystemExit(2)"))
    fails("score.py", "no function 'nope'", "no_e")(lambda: load_reward(f"{path}:nope", None, "text"))
    fails("score.py", "not_callable is a int, not a function")(
        lambda: load_reward(f"{path}:not_callable", None, "text"))
    fails("score.py", "names no function", "score.py:FUNCTION")(lambda: load_reward(str(path), None, "text"))
    fails("names no function")(lambda: load_reward(f"{path}:", None, "text"))


def test_function_failures_when_called(tmp_path, monkeypatch):
    path = write(tmp_path, "score.py", REWARDS)
    monkeypatch.chdir(tmp_path)  # named as given: a relative path
    text = fails("reward score.py:raises raised ValueError: no good")(
        lambda: load_reward("score.py:raises", None, "text")(TEXTS))
    assert "second line" not in text
    text = fails("sample 2 scored nan")(lambda: load_reward(f"{path}:nan_third", None, "text")(TEXTS))
    assert text.startswith(f"reward {path}:nan_third")


# -- check_scores --------------------------------------------------------------------------------

def test_check_scores_accepts_sequences_and_tensors():
    import torch

    assert check_scores("r", (1, 2.5), 2) == [1.0, 2.5]
    assert check_scores("r", np.array([1, 2], dtype=np.int64), 2) == [1.0, 2.0]
    assert check_scores("r", torch.tensor([0.5, 1.5]), 2) == [0.5, 1.5]
    assert check_scores("r", [np.float32(1), torch.tensor(2.0)], 2) == [1.0, 2.0]


@pytest.mark.parametrize("scores, words", [
    ([1.0, float("nan"), 0.0], ["reward r: sample 1 scored nan"]),
    ([1.0, 2.0, -float("inf")], ["sample 2 scored -inf"]),
    ([1.0, 2.0], ["reward r returned 2 scores for 3 samples"]),
    ("123", ["reward r returned a str, not a list of numbers"]),
    (5.0, ["returned a float, not a list of numbers"]),
    ((x for x in [1, 2, 3]), ["returned a generator"]),
    ([1.0, True, 0.0], ["sample 1 scored True, not a number"]),
    (np.array([True, False, True]), ["sample 0 scored True, not a number"]),
    ([1.0, 2.0, "3"], ["sample 2 scored '3', not a number"]),
    ([1.0, None, 2.0], ["sample 1 scored None"]),
    ([[1.0], [2.0], [3.0]], ["sample 0 scored [1.0], not a number"]),
    ([0, 0, 10 ** 400], ["sample 2 scored", "too large"]),
])
def test_check_scores_refuses(scores, words):
    fails(*words)(lambda: check_scores("r", scores, 3))


# -- --reward-cmd --------------------------------------------------------------------------------

JUDGE = '''
import json, os, sys
log = sys.argv[1] if len(sys.argv) > 1 else None
scores, seen = [], []
for line in sys.stdin:
    item = json.loads(line)
    seen.append(item)
    if "completion" in item:
        scores.append(len(item["completion"]) + (100 if item["prompt"] else 0))
    else:
        from PIL import Image
        import numpy as np
        assert os.path.isabs(item["image"])
        pixels = np.asarray(Image.open(item["image"]))
        scores.append(float(pixels.mean()) + (item["label"] or 0) * 1000)
if log:
    open(log, "w").write(json.dumps(seen))
print("\\n".join(map(str, scores)))
print()
'''


def test_command_on_text(tmp_path):
    judge = write(tmp_path, "judge.py", JUDGE)
    reward = load_reward(None, command(judge), "text")
    assert reward.name == command(judge) and reward.scores == "text"
    assert reward(TEXTS) == [5.0, 3.0, 3.0, 0.0]
    assert reward(TEXTS, PROMPTS) == [105.0, 103.0, 103.0, 100.0]
    assert reward(["line\nbreak \"quoted\" é"]) == [len("line\nbreak \"quoted\" é")]  # JSON keeps it one line


def test_command_on_images_removes_its_folder(tmp_path):
    import json

    judge, log = write(tmp_path, "judge.py", JUDGE), tmp_path / "seen.json"
    x = images(3, channels=1)
    reward = load_reward(None, command(judge, log), "images")
    assert reward(x) == pytest.approx(x.mean(axis=(1, 2, 3)))
    seen = json.loads(log.read_text())
    assert [s["label"] for s in seen] == [None] * 3 and seen[0]["image"].endswith("0.png")
    assert not Path(seen[0]["image"]).parent.exists()
    assert reward(images(2), labels=[np.int64(1), 2]) == pytest.approx(images(2).mean(axis=(1, 2, 3)) + [1000, 2000])
    failing = load_reward(None, command(write(tmp_path, "f.py", JUDGE + "raise SystemExit(1)\n"), log), "images")
    fails("exited with code 1")(lambda: failing(x))
    assert not Path(json.loads(log.read_text())[0]["image"]).parent.exists()  # also after a failure


def test_command_failures(tmp_path):
    def run(source, samples=TEXTS, scores="text"):
        return load_reward(None, command(write(tmp_path, "c.py", source)), scores)(samples)

    fails("reward command", "c.py", "exited with code 3: last words")(
        lambda: run("import sys\nsys.stderr.write('first\\nlast words\\n\\n')\nsys.exit(3)"))
    fails("exited with code 2: (nothing on stderr)")(lambda: run("raise SystemExit(2)"))
    fails("was killed by SIGKILL")(lambda: run("import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"))
    fails("printed 2 lines for 4 samples")(lambda: run("print(1)\nprint(2)"))
    fails("line 2 (sample 1) is not a number: 'oops'")(lambda: run("print('1\\noops\\n3\\n4')"))
    fails("sample 3 scored nan")(lambda: run("print('1\\n2\\n3\\nnan')"))
    fails("program 'no-such-program-here' not found")(lambda: load_reward(None, "no-such-program-here --x", "text"))
    plain = write(tmp_path, "plain.sh", "echo 1")
    fails("plain.sh is not an executable file")(lambda: load_reward(None, str(plain), "text"))
    fails("cannot be split")(lambda: load_reward(None, "python 'unclosed", "text"))
    fails("--reward-cmd is empty", render=True)(lambda: load_reward(None, "  ", "text"))
    fails("--reward-timeout must be", "got 0", render=True)(lambda: load_reward(None, "true", "text", timeout=0))


def test_hanging_command_is_killed_with_its_children(tmp_path):
    pids = tmp_path / "pids"
    script = write(tmp_path, "hang.py", f'''
import subprocess, sys, time
import os
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
open({str(pids)!r}, "w").write(f"{{os.getpid()}} {{child.pid}}")
time.sleep(30)
''')
    reward = load_reward(None, command(script), "text", timeout=1)
    start = time.monotonic()
    text = fails("took longer than --reward-timeout 1 s", render=True)(lambda: reward(TEXTS))
    assert time.monotonic() - start < 10, text
    child, grandchild = map(int, pids.read_text().split())
    assert not _alive(child)  # reaped
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and _alive(grandchild):  # killed with its group; init reaps it
        time.sleep(0.05)
    assert not _alive(grandchild)


def _alive(pid):
    """Running (a zombie waiting for init to reap it counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


# -- built-ins -----------------------------------------------------------------------------------

def test_builtins_listed_by_kind():
    assert list_rewards("text") == ["avoid:CHARS", "length"]
    assert list_rewards("images") == ["compressibility", "incompressibility"]
    assert sorted(list_rewards()) == sorted(list_rewards("text") + list_rewards("images"))


def test_avoid_and_length():
    avoid = load_reward("avoid:e", None, "text")
    assert avoid.name == "avoid:e"
    assert avoid(["hEllo", "xyz", "EEE", ""]) == [0.8, 1.0, 0.0, 0.0]  # case-insensitive; empty: 0
    assert load_reward("avoid:ab:", None, "text")(["a:bc"]) == [0.25]  # CHARS may hold ':'
    assert load_reward("avoid:/:", None, "text")(["a/:b"]) == [0.5]  # and '/'
    assert load_reward("length", None, "text")(["x" * 150, ""]) == [1.5, 0.0]


def test_compressibility_prefers_flat_images():
    flat = np.full((1, 32, 32, 3), 128, dtype=np.uint8)
    noise = images(1, channels=3, seed=1).repeat(4, axis=1).repeat(4, axis=2)
    both = np.concatenate([flat, noise])
    compressibility = load_reward("compressibility", None, "images")(both)
    incompressibility = load_reward("incompressibility", None, "images")(both)
    assert compressibility[0] > compressibility[1]
    assert incompressibility == pytest.approx([-s for s in compressibility])
    assert len(load_reward("compressibility", None, "images")(images(2, channels=1))) == 2


def test_builtin_failures():
    fails("reward compressibility scores images", "this run makes text", "avoid:CHARS, length")(
        lambda: load_reward("compressibility", None, "text"))
    fails("reward avoid:CHARS scores text", "compressibility, incompressibility")(
        lambda: load_reward("avoid:e", None, "images"))
    fails("avoid needs its CHARS")(lambda: load_reward("avoid:", None, "text"))
    fails("avoid needs its CHARS")(lambda: load_reward("avoid", None, "text"))
    fails("length takes no parameter")(lambda: load_reward("length:3", None, "text"))
    fails("unknown reward 'bleu'", "avoid:CHARS, length")(lambda: load_reward("bleu", None, "text"))


def test_exactly_one_of_reward_and_command():
    fails("exactly one of --reward", "--reward-cmd", "neither", render=True)(lambda: load_reward(None, None, "text"))
    fails("exactly one of", "both")(lambda: load_reward("length", "true", "text"))
    fails("--reward is empty", render=True)(lambda: load_reward("", None, "text"))


def test_close_drops_the_private_module(tmp_path):
    reward = load_reward(f"{write(tmp_path, 's.py', 'def f(x):  return [0] * len(x)')}:f", None, "text")
    assert reward.module in sys.modules
    reward.close()
    assert reward.module not in sys.modules
