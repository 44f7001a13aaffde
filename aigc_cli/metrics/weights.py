"""Finding, downloading and checking the FID Inception weights file.

The file is pytorch-fid's ``pt_inception-2015-12-05-6726825d.pth``: a plain state dict, read with
``torch.load(weights_only=True)`` so that nothing but tensors is ever unpickled. Looked for in
this order: an explicit path (``--inception-weights``), the ``AIGC_INCEPTION_WEIGHTS`` variable,
the user cache (``<cache>/inception/``); else downloaded from ``AIGC_INCEPTION_URL`` (default:
pytorch-fid's release) into the cache.

A download is cut off once it passes ``MAX_BYTES`` (before any checksum: a hostile server cannot
fill the disk), then must have the file's full sha256 (``SHA256``; its first 8 digits are the
``6726825d`` in its name, the torch.hub convention). Every file, downloaded or given, must then
hold exactly the expected keys and shapes with finite values.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from aigc_cli.core.errors import WeightsError
from aigc_cli.core.io import TooLarge, atomic_path, atomic_write_json, check_input, copy_capped

FILENAME = "pt_inception-2015-12-05-6726825d.pth"
# The full sha256 and size of pytorch-fid's release file (the same bytes torch-fidelity ships as
# weights-inception-2015-12-05-6726825d.pth), as recorded by several independent users of it.
SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
SIZE = 95_628_359
MAX_BYTES = 128 << 20  # the file and some slack; a download past this is stopped, not finished
DEFAULT_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FILENAME}"
ENV_WEIGHTS = "AIGC_INCEPTION_WEIGHTS"
ENV_URL = "AIGC_INCEPTION_URL"
OPTION = "--inception-weights"

ProgressFn = Callable[[int, "int | None"], None]  # (bytes so far, total bytes or None)


class WeightsUnavailable(WeightsError):
    """No weights file was found and none could be downloaded."""


def weights_url() -> str:
    return os.environ.get(ENV_URL) or DEFAULT_URL


def cache_folder() -> Path:
    from aigc_cli.core.paths import cache_dir

    return cache_dir() / "inception"


def cached_weights_path() -> Path:
    return cache_folder() / FILENAME


def how_to_get() -> str:
    return (
        f"pass {OPTION} PATH or set {ENV_WEIGHTS} to a copy of {FILENAME} "
        f"(download it from {weights_url()})"
    )


def find_weights(explicit: str | os.PathLike | None = None) -> Path | None:
    """The weights file to use without downloading, or None. A path named but missing is an error."""
    for given, name in ((explicit, OPTION), (os.environ.get(ENV_WEIGHTS), ENV_WEIGHTS)):
        if given:  # a FIFO, a folder, a link loop: one line naming it, before anything opens it
            check_input(given, f"a copy of {FILENAME} to {name}", error=WeightsError)
            return Path(given).expanduser()
    cached = cached_weights_path()
    return cached if cached.is_file() else None


def locate_weights(
    explicit: str | os.PathLike | None = None,
    download: bool = True,
    progress: ProgressFn | None = None,
    on_download: Callable[[str, Path], None] | None = None,
) -> Path:
    """Find the weights file, downloading it into the cache when allowed and needed."""
    path = find_weights(explicit)
    if path is not None:
        return path
    if not download:
        raise WeightsUnavailable(f"no FID Inception weights found; {how_to_get()}")
    url = weights_url()
    if on_download:
        on_download(url, cached_weights_path())
    return download_weights(url, cached_weights_path(), progress=progress)


def download_weights(
    url: str,
    dest: str | os.PathLike,
    sha256: str | None = None,
    progress: ProgressFn | None = None,
    timeout: float = 30.0,
    max_bytes: int | None = None,
) -> Path:
    """Stream ``url`` into ``dest`` (atomically), checking its size, sha256 and contents.

    ``sha256`` (default: the canonical file's ``SHA256``) must be the file's full sha256; more
    than ``max_bytes`` (default ``MAX_BYTES``) stops the download before it is hashed or kept.
    """
    import urllib.error
    import urllib.request

    sha256 = SHA256 if sha256 is None else sha256.lower()
    max_bytes = MAX_BYTES if max_bytes is None else max_bytes
    dest = Path(dest)
    digest = hashlib.sha256()
    with atomic_path(dest, parents=True) as tmp:
        try:
            request = urllib.request.Request(url, headers={"User-Agent": "aigc-cli"})
            with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp, "wb") as out:
                copy_capped(response, out, digest, max_bytes, progress)
        except TooLarge as e:
            raise WeightsError(f"the download from {url} {e.what} than the {max_bytes:,}-byte limit "
                               f"({FILENAME} is {SIZE:,} bytes); it was stopped and not kept") from None
        except (urllib.error.URLError, OSError, ValueError) as e:
            reason = getattr(e, "reason", None) or e
            raise WeightsUnavailable(
                f"cannot download the FID Inception weights from {url} ({reason}); "
                f"pass {OPTION} PATH or set {ENV_WEIGHTS} to a copy of {FILENAME}"
            ) from None
        sha = digest.hexdigest()
        if sha != sha256:
            raise WeightsError(
                f"the file downloaded from {url} has sha256 {sha}, expected {sha256}; it was not kept"
            )
        read_state_dict(tmp)  # a readable FID Inception state dict, or an error (and no file)
    _remember_sha(dest, sha)
    return dest


# ----------------------------------------------------------------------------------------------
# Reading and checking


@dataclass(frozen=True)
class WeightsInfo:
    path: Path
    sha256: str


def file_sha256(path: str | os.PathLike) -> str:
    """sha256 of the file, remembered in the cache by (path, size, mtime) so it is hashed once."""
    path = Path(path).resolve()
    st = path.stat()
    key = f"{path}|{st.st_size}|{st.st_mtime_ns}"
    memo_path = cache_folder() / "sha256.json"
    memo: dict[str, str] = {}
    try:
        memo = json.loads(memo_path.read_text())
        if key in memo:
            return memo[key]
    except (OSError, ValueError):
        memo = {}
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    sha = h.hexdigest()
    _store_memo(memo_path, memo, key, sha)
    return sha


def _remember_sha(path: Path, sha: str) -> None:
    path = path.resolve()
    st = path.stat()
    memo_path = cache_folder() / "sha256.json"
    try:
        memo = json.loads(memo_path.read_text())
    except (OSError, ValueError):
        memo = {}
    _store_memo(memo_path, memo, f"{path}|{st.st_size}|{st.st_mtime_ns}", sha)


def _store_memo(memo_path: Path, memo: dict, key: str, sha: str) -> None:
    memo = {k: v for k, v in memo.items() if not k.startswith(key.rsplit("|", 2)[0] + "|")}
    memo[key] = sha
    memo = dict(list(memo.items())[-32:])  # the latest few files are enough
    try:
        atomic_write_json(memo_path, memo, parents=True)
    except OSError:
        pass  # a read-only cache only costs a re-hash next time


def read_state_dict(path: str | os.PathLike):
    """Load and check the state dict; any problem is a one-line WeightsError."""
    import torch

    from aigc_cli.metrics.inception import expected_shapes

    path = Path(path)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt, truncated, not a torch file, or holds pickled objects
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise WeightsError(f"cannot read Inception weights {path}: {first[:200]}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} is not a state dict of tensors; expected {FILENAME}")
    expected = expected_shapes()
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = sorted(set(expected) - set(state) - optional)
    unexpected = sorted(set(state) - set(expected))
    wrong = sorted(k for k in set(state) & set(expected) if tuple(state[k].shape) != expected[k])
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong)):
            if keys:
                parts.append(f"{len(keys)} {label} (e.g. {keys[0]})")
        raise WeightsError(f"{path} does not match the FID Inception-v3 ({FILENAME}): {', '.join(parts)}")
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise WeightsError(f"{path} is corrupt: {key} holds NaN or infinite values")
    return state


def load_model(path: str | os.PathLike):
    """(FIDInceptionV3 in eval mode on the CPU, WeightsInfo)."""
    from aigc_cli.metrics.inception import FIDInceptionV3

    import torch

    state = dict(read_state_dict(path))
    with torch.device("meta"):  # no random initialisation of 24M parameters that are replaced anyway
        model = FIDInceptionV3()
    for key in model.state_dict():
        if key.endswith("num_batches_tracked") and key not in state:  # optional in the file
            state[key] = torch.tensor(0, dtype=torch.long)
    model.load_state_dict(state, strict=True, assign=True)
    model.eval().requires_grad_(False)
    return model, WeightsInfo(Path(path), file_sha256(path))
