"""Rewards for ``aigc tune RUN --reward ...``: what scores a batch of samples, as N finite floats.

Three kinds, chosen by ``load_reward``:

* ``--reward FILE.py:FUNCTION``: the file is imported under a private module name (so its
  ``if __name__ == "__main__":`` block does not run; its folder is not put on ``sys.path``) and
  called as ``fn(samples)``. The spec is split on its LAST ':' (a path may hold colons). A
  function that declares a parameter named ``completions`` (text) or ``images`` gets the samples
  by that keyword instead, and one that declares ``prompts`` (text) or ``labels`` (images), or
  takes ``**kwargs``, gets those by keyword too: TRL passes ``prompts=`` and ``completions=`` as
  keywords, so its reward functions work unchanged. Nothing is passed that a function does not
  declare. The samples it gets are the caller's own: a copy of the lists, a read-only view of the
  images (an in-place edit is a one-line error, never a change to what is trained on). It runs in
  this process, with no timeout: a function that hangs is stopped with Ctrl-C.
* ``--reward-cmd "CMD"``: CMD is split with shlex (no shell) and started once per call, in a new
  session (a timeout kills its whole process group, grandchildren too). It reads one JSON object
  a line on stdin and prints one number a line on stdout, in the same order: text
  ``{"prompt": str or null, "completion": str}``; images ``{"image": "/abs/0.png", "label": int
  or null}``, PNGs in a fresh temporary folder removed after the call, whatever happened. It
  inherits this process's environment and working folder.
  Trailing blank lines are ignored; any other line must be a number. A command that outlives
  ``reward_timeout`` seconds (default 60) is killed.
* built-ins (``list_rewards``): text ``avoid:CHARS`` (1 minus the share of the completion's
  characters that are in CHARS, case-insensitively; an empty completion scores 0, for saying
  nothing must not be the best way to avoid a letter) and ``length`` (characters / 100); images
  ``compressibility`` and ``incompressibility`` as in DDPO (Black et al. 2023): the JPEG size at
  quality 95 in kilobytes (1000 bytes), negated for compressibility. Gray images (C = 1) are
  encoded as gray JPEGs.

Samples: text, a list[str] of completions (``prompts``: the prompt of each, or None); images, a
uint8 array (N, H, W, C), C in {1, 3} (``labels``: each image's class, or None). Whatever a reward
returns goes through ``check_scores``: a list, tuple, numpy array or torch tensor of exactly N
real numbers (a bool is not one), all finite. Every problem is one line (RewardError) naming the
reward and, where there is one, the first bad sample.
"""

from __future__ import annotations

import contextlib
import importlib.util
import inspect
import itertools
import json
import math
import numbers
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
from abc import ABC, abstractmethod
from importlib.machinery import SourceFileLoader
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from aigc_cli.core.errors import AigcError, first_line, opt
from aigc_cli.core.io import check_input
from aigc_cli.core.registry import Registry

KINDS = ("text", "images")
DEFAULT_TIMEOUT = 60.0
SHOWN = 60  # characters of a bad value or line that a message quotes


class RewardError(AigcError):
    """A reward that cannot be loaded, failed, or scored badly: one line naming it (and the first
    bad sample)."""


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= SHOWN else text[: SHOWN - 3] + "..."


class Reward(ABC):
    name: str  # as the user gave it: "score.py:no_e", "python judge.py", "avoid:e", "compressibility"
    scores: str  # "text" or "images"

    @abstractmethod
    def __call__(self, samples, prompts: list[str] | None = None,
                 labels: list[int] | None = None) -> list[float]:
        """N finite floats for N samples (see the module docstring), checked by check_scores."""

    def close(self) -> None:
        """Release what the reward holds (nothing, unless a kind says otherwise)."""


def check_scores(name: str, scores: Any, n: int) -> list[float]:
    """``scores`` as a list of ``n`` finite floats, or a RewardError naming reward ``name`` and
    the first bad sample: "reward x: sample 3 scored nan", "reward x returned 5 scores for 8
    samples", "reward x returned a str, not a list of numbers"."""
    values = scores.tolist() if hasattr(scores, "tolist") else scores  # numpy array, torch tensor
    if not isinstance(values, (list, tuple)):
        raise RewardError(f"reward {name} returned a {type(scores).__name__}, not a list of numbers")
    if len(values) != n:
        raise RewardError(f"reward {name} returned {len(values)} scores for {n} samples")
    out = []
    for i, v in enumerate(values):
        if hasattr(v, "tolist") and not isinstance(v, (list, tuple)):
            v = v.tolist()  # a numpy scalar or 0-d tensor in a list (an array becomes a list: refused below)
        if isinstance(v, bool) or not isinstance(v, numbers.Real):
            raise RewardError(f"reward {name}: sample {i} scored {_show(v)}, not a number")
        try:
            f = float(v)
        except OverflowError:  # an int past float's range
            raise RewardError(f"reward {name}: sample {i} scored {_show(v)}, too large for a float") from None
        if not math.isfinite(f):
            raise RewardError(f"reward {name}: sample {i} scored {f}")
        out.append(f)
    return out


def _images(samples) -> Any:
    """The images as a uint8 (N, H, W, C) array, C in {1, 3}; anything else is the caller's bug."""
    import numpy as np

    array = np.asarray(samples)
    if array.dtype != np.uint8 or array.ndim != 4 or array.shape[3] not in (1, 3):
        raise ValueError(f"images must be uint8 (N, H, W, C) with C 1 or 3, got {array.dtype} {array.shape}")
    return array


# -- FILE.py:FUNCTION ----------------------------------------------------------------------------

_module_ids = itertools.count()


class FunctionReward(Reward):
    def __init__(self, name: str, path: str, function: str, scores: str):
        self.name, self.scores = name, scores
        check_input(path, f"a Python file defining {function} ({opt('reward')} FILE.py:FUNCTION)", error=RewardError)
        self.module = f"_aigc_reward_{next(_module_ids)}"
        file = str(Path(path).expanduser())
        # The loader named: a file read as Python source whatever its suffix (spec_from_file_location
        # alone knows only .py and extension modules).
        spec = importlib.util.spec_from_file_location(self.module, file, loader=SourceFileLoader(self.module, file))
        module = importlib.util.module_from_spec(spec)
        sys.modules[self.module] = module  # dataclasses and pickle look classes up there
        try:
            spec.loader.exec_module(module)
        except SyntaxError as e:
            self.close()
            raise RewardError(f"reward file {path} has a syntax error at line {e.lineno}: {e.msg}") from None
        except (Exception, SystemExit) as e:
            self.close()
            raise RewardError(f"reward file {path} raised {type(e).__name__} on import: {first_line(e)}") from None
        fn = getattr(module, function, None)
        if fn is None:
            self.close()
            defined = sorted(k for k, v in vars(module).items()
                             if callable(v) and not k.startswith("_") and getattr(v, "__module__", None) == self.module)
            raise RewardError(f"reward file {path} has no function {function!r}"
                              + (f"; it defines: {', '.join(defined)}" if defined else ""))
        if not callable(fn):
            self.close()
            raise RewardError(f"reward file {path}: {function} is a {type(fn).__name__}, not a function")
        self.fn = fn
        self.sample_keyword, self.keywords = _keywords(fn, scores)

    def __call__(self, samples, prompts=None, labels=None) -> list[float]:
        if self.scores == "images":
            samples = _images(samples).view()
            samples.flags.writeable = False
            extra = {"labels": None if labels is None else list(labels)}
        else:
            samples, extra = list(samples), {"prompts": None if prompts is None else list(prompts)}
        kwargs = {k: v for k, v in extra.items() if k in self.keywords}
        try:
            if self.sample_keyword:
                result = self.fn(**{self.sample_keyword: samples}, **kwargs)
            else:
                result = self.fn(samples, **kwargs)
        except (Exception, SystemExit) as e:
            raise RewardError(f"reward {self.name} raised {type(e).__name__}: {first_line(e)}") from None
        return check_scores(self.name, result, len(samples))

    def close(self) -> None:
        sys.modules.pop(self.module, None)


def _keywords(fn: Callable, scores: str) -> tuple[str | None, set[str]]:
    """(the keyword the samples go by, or None for the first positional; the keywords among
    prompts/labels that ``fn`` declares by name or through **kwargs)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # some builtins and C callables have no signature
        return None, set()
    named = {p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    any_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    sample = "completions" if scores == "text" else "images"
    extra = "prompts" if scores == "text" else "labels"
    return (sample if sample in named else None), ({extra} if extra in named or any_kw else set())


# -- --reward-cmd --------------------------------------------------------------------------------

class CommandReward(Reward):
    def __init__(self, command: str, scores: str, timeout: float):
        self.name, self.scores, self.timeout = command, scores, timeout
        self.who = f"command {command!r}"  # what messages call it: "reward command 'python judge.py'"
        try:
            self.argv = shlex.split(command)
        except ValueError as e:
            raise RewardError(f"reward {self.who} cannot be split into words: {e}") from None
        if not self.argv:
            raise RewardError(f"{opt('reward_cmd')} is empty; give the command that prints the scores")
        program = self.argv[0]
        if shutil.which(program) is None:  # found now, not after the first batch of samples
            if os.sep in program and os.path.exists(program):
                raise RewardError(f"reward {self.who}: {program} is not an executable file")
            raise RewardError(f"reward {self.who}: program {program!r} not found")

    def __call__(self, samples, prompts=None, labels=None) -> list[float]:
        if self.scores == "text":
            if prompts is not None and len(prompts) != len(samples):
                raise ValueError(f"{len(prompts)} prompts for {len(samples)} completions")
            lines = [{"prompt": None if prompts is None else prompts[i], "completion": c}
                     for i, c in enumerate(samples)]
            return self._run(lines)
        images = _images(samples)
        with tempfile.TemporaryDirectory(prefix="aigc-reward-") as folder:  # removed, whatever happens
            lines = []
            for i, image in enumerate(images):
                path = os.path.join(os.path.abspath(folder), f"{i}.png")
                _pil(image).save(path)
                label = None if labels is None else int(labels[i])
                lines.append({"image": path, "label": label})
            return self._run(lines)

    def _run(self, lines: list[dict]) -> list[float]:
        data = "".join(json.dumps(line) + "\n" for line in lines).encode()
        try:
            proc = subprocess.Popen(self.argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, start_new_session=True)
        except OSError as e:  # removed or made unexecutable since load_reward
            raise RewardError(f"reward {self.who} cannot start: {e.strerror or e}") from None
        try:
            out, err = proc.communicate(data, timeout=self.timeout)
        except subprocess.TimeoutExpired:
            raise RewardError(f"reward {self.who} took longer than {opt('reward_timeout')} "
                              f"{self.timeout:g} s; it was stopped") from None
        finally:
            if proc.returncode is None:  # timed out or interrupted: not yet reaped, so its group id is its own
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
        if proc.returncode != 0:
            said = [s for s in err.decode(errors="replace").splitlines() if s.strip()]
            how = (f"was killed by {_signal_name(-proc.returncode)}" if proc.returncode < 0
                   else f"exited with code {proc.returncode}")
            raise RewardError(f"reward {self.who} {how}: " + (said[-1].strip() if said else "(nothing on stderr)"))
        return check_scores(self.who, _parse(self.who, out.decode(errors="replace"), len(lines)), len(lines))


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:  # a real-time signal has no name
        return f"signal {number}"


def _parse(who: str, stdout: str, n: int) -> list[float]:
    """One number a line; a line that is not one names its sample."""
    lines = stdout.splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    if len(lines) != n:
        raise RewardError(f"reward {who} printed {len(lines)} lines for {n} samples; print one score a line")
    scores = []
    for i, line in enumerate(lines):
        try:
            scores.append(float(line.strip()))
        except ValueError:
            raise RewardError(f"reward {who}: line {i + 1} (sample {i}) is not a number: {_show(line)}") from None
    return scores


def _pil(image):
    """A PIL image of one (H, W, C) uint8 array: gray for C = 1, RGB for C = 3."""
    from PIL import Image

    return Image.fromarray(image[..., 0] if image.shape[2] == 1 else image)


# -- built-ins -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class BuiltIn:
    name: str  # registry key; a parametrised one is used as "name:PARAM"
    scores: str
    description: str
    make: Callable[[str | None], Callable[[Any], list[float]]]  # param -> scorer of the samples
    param: str | None = None  # what the parameter is called in listings ("CHARS"), None: takes none

    @property
    def usage(self) -> str:
        return f"{self.name}:{self.param}" if self.param else self.name


BUILTINS: Registry[BuiltIn] = Registry("reward")


def register_builtin(builtin: BuiltIn) -> BuiltIn:
    return BUILTINS.register(builtin.name)(builtin)


def _avoid(chars: str | None):
    if not chars:
        raise RewardError("reward avoid: needs the characters to avoid, e.g. avoid:e")
    avoided = set(chars) | {c.lower() for c in chars}

    def score(completions: list[str]) -> list[float]:
        # An empty completion: 0, not 1 (else the model learns to say nothing).
        return [1 - sum(c in avoided or c.lower() in avoided for c in s) / len(s) if s else 0.0
                for s in completions]

    return score


def _jpeg_kb(images) -> list[float]:
    """Each (H, W, C) image's JPEG size at quality 95, in kilobytes (DDPO's measure)."""
    import io

    sizes = []
    for image in images:
        buffer = io.BytesIO()
        _pil(image).save(buffer, format="JPEG", quality=95)
        sizes.append(buffer.tell() / 1000)
    return sizes


register_builtin(BuiltIn("avoid", "text", "1 minus the share of the completion's characters in CHARS "
                         "(case-insensitive); an empty completion scores 0.", _avoid, param="CHARS"))
register_builtin(BuiltIn("length", "text", "The completion's length in characters, divided by 100.",
                         lambda _: lambda completions: [len(s) / 100 for s in completions]))
register_builtin(BuiltIn("compressibility", "images", "Minus the JPEG size (quality 95) in kilobytes: "
                         "smaller files score higher (DDPO).", lambda _: lambda images: [-s for s in _jpeg_kb(images)]))
register_builtin(BuiltIn("incompressibility", "images", "The JPEG size (quality 95) in kilobytes: larger "
                         "files score higher (DDPO).", lambda _: _jpeg_kb))


class BuiltInReward(Reward):
    def __init__(self, name: str, builtin: BuiltIn, param: str | None):
        self.name, self.scores = name, builtin.scores
        self.score = builtin.make(param)

    def __call__(self, samples, prompts=None, labels=None) -> list[float]:
        if self.scores == "images":
            samples = _images(samples)
        return check_scores(self.name, self.score(samples), len(samples))


def list_rewards(scores: str | None = None) -> list[str]:
    """The built-in rewards as the user writes them ("avoid:CHARS", "length", ...), all or those
    that score ``scores`` ("text" or "images")."""
    return [b.usage for b in (BUILTINS.get(n) for n in BUILTINS.names()) if scores in (None, b.scores)]


def describe_rewards() -> list[tuple[str, str, str]]:
    """(usage, what it scores, description) of each built-in, for help and docs."""
    return [(b.usage, b.scores, b.description) for b in (BUILTINS.get(n) for n in BUILTINS.names())]


# -- choosing one --------------------------------------------------------------------------------

def load_reward(spec: str | None, command: str | None, scores: str,
                timeout: float = DEFAULT_TIMEOUT) -> Reward:
    """The reward the user chose: ``spec`` (``--reward``: FILE.py:FUNCTION or a built-in) or
    ``command`` (``--reward-cmd``), exactly one, for a run that makes ``scores``."""
    if scores not in KINDS:
        raise ValueError(f"scores must be one of {KINDS}, got {scores!r}")
    options = f"{opt('reward')} FILE.py:FUNCTION, {opt('reward')} NAME ({', '.join(list_rewards(scores))}) " \
              f"or {opt('reward_cmd')} COMMAND"
    if (spec is None) == (command is None):
        which = "both" if spec is not None else "neither"
        raise RewardError(f"give exactly one of {options} ({which} given)")
    if command is not None:
        if not (isinstance(timeout, (int, float)) and math.isfinite(timeout) and timeout > 0):
            raise RewardError(f"{opt('reward_timeout')} must be a number of seconds above 0, got {timeout}")
        return CommandReward(command, scores, float(timeout))
    if not spec.strip():
        raise RewardError(f"{opt('reward')} is empty; give {options}")
    # FILE.py:FUNCTION, split on the last ':'; a built-in, on the first (avoid:/: avoids '/' and ':');
    # a file not named .py is taken for one when its path has a folder in it.
    head, colon, tail = spec.rpartition(":")
    name, _, param = spec.partition(":")
    if colon and (head.endswith(".py") or name not in BUILTINS and os.sep in head):
        if not tail:
            raise RewardError(f"reward {spec} names no function; give {head}:FUNCTION")
        return FunctionReward(spec, head, tail, scores)
    if spec.endswith(".py"):
        raise RewardError(f"reward {spec} names no function; give {spec}:FUNCTION")
    if name not in BUILTINS:
        raise RewardError(f"unknown reward {spec!r}; give {options}")
    builtin = BUILTINS.get(name)
    if builtin.scores != scores:
        raise RewardError(f"reward {builtin.usage} scores {builtin.scores}, but this run makes {scores}; "
                          f"for {scores} give {options}")
    if builtin.param and not param:
        raise RewardError(f"reward {name} needs its {builtin.param}: give {builtin.usage}, e.g. {name}:e")
    if not builtin.param and ":" in spec:
        raise RewardError(f"reward {name} takes no parameter; give {name}")
    return BuiltInReward(spec, builtin, param or None)


def reward_record(values: dict[str, Any], produces: str) -> dict[str, Any]:
    """config.json's record of the reward, loaded once here so that a bad one fails before a run
    exists; a reward file by its absolute path (a resume may start elsewhere)."""
    spec, command, timeout = values["reward"], values["reward_cmd"], values["reward_timeout"]
    reward = load_reward(spec, command, produces, timeout)
    reward.close()
    if isinstance(reward, FunctionReward):
        file, _, function = spec.rpartition(":")
        spec = f"{Path(file).expanduser().resolve()}:{function}"
    return {"spec": spec, "command": command, "timeout": timeout}
