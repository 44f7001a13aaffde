"""Text corpora for the text families: a file, a folder of .txt files, a named corpus downloaded
once (checksummed) or the built-in one.

A corpus is read whole as UTF-8 (a file that is not is a one-line error naming it) and split by
characters: ``train`` is the first 90%, ``test`` the last 10%, as nanoGPT splits Tiny
Shakespeare. The character set is taken over the whole corpus, so a character-level vocabulary
covers the held-out part too.
"""

from __future__ import annotations

import gzip
import hashlib
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable

from aigc_cli.core.errors import DatasetError
from aigc_cli.core.registry import Registry
from aigc_cli.core.io import MISSING, open_input, probe
from aigc_cli.data.base import SPLITS
from aigc_cli.data.download import Progress, fetch, missing

TRAIN_SHARE = 0.9
MAX_CHARS = 1 << 30  # a corpus lives in memory, as its token ids (int64) on the training device
TEXT_SUFFIXES = (".txt",)


@dataclass
class TextCorpus:
    """One split of a corpus (``text``) and the other one (``held_out``, for validation)."""

    text: str
    held_out: str
    name: str  # "bard (train)", "notes.txt"
    spec: dict[str, Any]  # what load_corpus needs to load it again: {"spec": ..., "split": ...}
    alphabet: str  # every character of the whole corpus, sorted
    files: int = 1
    skipped_why: dict[str, int] = field(default_factory=dict)  # a folder's .txt entries not read: kind -> count
    _fingerprint: str | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.text)

    @property
    def fingerprint(self) -> str:
        """sha256 of the split's text: a changed corpus is noticed on --resume."""
        if self._fingerprint is None:
            self._fingerprint = hashlib.sha256(self.text.encode("utf-8")).hexdigest()
        return self._fingerprint

    def skip_summary(self) -> str | None:
        """"notes (train): skipped 2 of 5 .txt entries: 1 a FIFO, 1 a symbolic link loop", or None.
        Only a folder's entries that are not regular files are skipped (never opened); a file that
        is not UTF-8 is an error."""
        if not self.skipped_why:
            return None
        skipped = sum(self.skipped_why.values())
        why = ", ".join(f"{n} {kind}" for kind, n in sorted(self.skipped_why.items()))
        return f"{self.name}: skipped {skipped} of {self.files + skipped} .txt entries: {why}"

    def info(self) -> dict[str, Any]:
        extra = {"skipped_why": dict(self.skipped_why)} if self.skipped_why else {}
        return {"name": self.name, "spec": self.spec, "size": len(self.text), "held_out": len(self.held_out),
                "alphabet": self.alphabet, "files": self.files, **extra, "fingerprint": self.fingerprint,
                # The image fields every run's config.json carries, empty for text.
                "shape": None, "classes": None, "class_names": None}


@dataclass(frozen=True)
class NamedCorpus:
    name: str
    description: str
    read: Callable[[Progress | None], str]  # the whole corpus
    needs_download: bool = False


CORPORA: Registry[NamedCorpus] = Registry("text corpus")


def register_corpus(name: str, description: str, needs_download: bool = False):
    def deco(fn: Callable[[Progress | None], str]):
        CORPORA.register(name)(NamedCorpus(name, description, fn, needs_download))
        return fn

    return deco


def list_corpora() -> list[str]:
    return CORPORA.names()


SHAKESPEARE = {"input.txt": "6fb458f1232090904fb40fe944165e91"}  # md5, as data/download.py checks
SHAKESPEARE_MIRRORS = ["https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/"]


@register_corpus("bard", "Shakespeare, built in: the first 300k characters of Tiny Shakespeare (no download)")
def _read_bard(progress: Progress | None = None) -> str:
    data = resources.files("aigc_cli.data.corpora").joinpath("bard.txt.gz").read_bytes()
    return gzip.decompress(data).decode("utf-8")


@register_corpus("shakespeare", "Tiny Shakespeare (Karpathy's char-rnn), 1.1M characters, downloaded once",
                 needs_download=True)
def _read_shakespeare(progress: Progress | None = None) -> str:
    folder = fetch("shakespeare", SHAKESPEARE, SHAKESPEARE_MIRRORS, progress)
    return read_text_file(folder / "input.txt")


def corpus_status(name: str) -> str | None:
    """'downloaded' or 'not downloaded' for a corpus that downloads; None otherwise."""
    if name == "shakespeare":
        return "not downloaded" if missing("shakespeare", SHAKESPEARE) else "downloaded"
    return None


def read_text_file(path: Path, what: str = "a UTF-8 text file") -> str:
    """The UTF-8 text of the regular file ``path`` (a byte-order mark dropped); a one-line
    DatasetError asking for ``what`` when it is not one (core.io.open_input: a FIFO or device is
    never read), and when it is too big, is not UTF-8 or holds NUL bytes."""
    with open_input(path, what, error=DatasetError) as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_CHARS * 4:
            raise DatasetError(f"{path} is {size:,} bytes, more than a text corpus may be ({MAX_CHARS:,} characters)")
        data = f.read()
    return decode_text(data, str(path))


def decode_text(data: bytes, label: str) -> str:
    """``data`` as UTF-8 text (a byte-order mark dropped); a one-line DatasetError naming
    ``label`` when it is not UTF-8 or holds NUL bytes."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DatasetError(f"{label} is not UTF-8 text (byte {e.start} is {data[e.start]:#04x}); "
                           "convert it (iconv -t utf-8) or pass another file") from None
    if "\x00" in text:
        raise DatasetError(f"{label} holds NUL bytes: not a text file")
    return text.removeprefix("\ufeff")  # a byte-order mark is not text


def _read_folder(path: Path) -> tuple[str, int, dict[str, int]]:
    """(the text of the folder's .txt files, how many, its .txt entries that are not regular files
    (FIFOs, devices, sockets, link loops, broken links: never opened) by kind)."""
    files, skipped = [], {}
    for p in sorted(p for p in path.rglob("*") if p.suffix.lower() in TEXT_SUFFIXES):
        kind = probe(p)[1].split(" (")[0]  # "a broken symbolic link (to x)": one reason for all
        if kind == "a regular file":
            files.append(p)
        elif kind != "a folder":  # a folder named x.txt is searched, not skipped
            skipped[kind] = skipped.get(kind, 0) + 1
    if not files:
        raise DatasetError(f"{path} holds no .txt files" + (f" that are regular files ({sum(skipped.values())} "
                                                              "skipped)" if skipped else ""))
    # One document after another, a blank line between: a file's end is not glued to the next's start.
    return "\n\n".join(read_text_file(p).rstrip("\n") for p in files) + "\n", len(files), skipped


def load_corpus(spec: str, split: str = "train", progress: Progress | None = None) -> TextCorpus:
    """A corpus by name or path; ``split`` picks the training part, the other is held out."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
    files, skipped = 1, {}
    if spec in CORPORA:
        text, label = CORPORA.get(spec).read(progress), f"{spec} ({split})"
    else:
        path = Path(spec).expanduser()
        kind = probe(path)[1]
        if kind == MISSING:
            raise DatasetError(f"no text corpus {spec!r}: not a built-in name ({', '.join(list_corpora())}) "
                               "and no such file or folder")
        try:
            if kind == "a folder":
                text, files, skipped = _read_folder(path)
            else:  # a FIFO, a link loop...: one line from read_text_file, before any open
                text = read_text_file(path, "a UTF-8 text file, a folder of .txt files or a corpus name")
        except OSError as e:
            raise DatasetError(f"cannot read {spec}: {e.strerror or e}") from None
        label = f"{path.name} ({split})"
    if len(text) > MAX_CHARS:
        raise DatasetError(f"{spec} holds {len(text):,} characters, more than the {MAX_CHARS:,} a corpus may hold")
    cut = int(len(text) * TRAIN_SHARE)
    train, test = text[:cut], text[cut:]
    if len(test) < 2:
        raise DatasetError(f"{spec} is too short to split ({len(text)} characters); give it at least a few lines")
    chosen, other = (train, test) if split == "train" else (test, train)
    return TextCorpus(chosen, other, label, {"spec": spec, "split": split}, "".join(sorted(set(text))), files, skipped)
