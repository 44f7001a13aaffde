"""Captions of an image folder's images, in the conventions people already use.

- ``metadata.jsonl`` at the folder's root (Hugging Face ``imagefolder``): one JSON object a line,
  ``file_name`` (the image's path relative to the root, subfolders allowed) and the caption
  column (``text``, or what ``--caption-column`` names). When it exists it is the only source.
- otherwise sidecars: ``cat.png``'s caption is the whole of ``cat.txt`` beside it (``cat.jpg``
  beside it would share it).
- neither: the dataset has no captions (``captions`` None).

Captions are stripped of surrounding whitespace; an empty one, and an image without one, is ""
(trained unconditionally, as classifier-free guidance trains on "" anyway) and counted. A
metadata ``file_name`` naming a file the folder lacks is an error; one naming a file the folder
skipped (unreadable) is passed over: that file is not in the dataset.

Captions are never stored in the decoded cache (data/cache.py): they are read here at every load
and matched to the files of the cache's rows, so an edited caption takes effect without decoding
the images again. Caption files are therefore left out of the folder's listing (is_caption_file).
"""

from __future__ import annotations

import json
import posixpath
from dataclasses import dataclass
from pathlib import Path

from aigc_cli.core.errors import DatasetError
from aigc_cli.core.io import MISSING, open_input, probe
from aigc_cli.data.text import decode_text

METADATA = "metadata.jsonl"
COLUMN = "text"  # --caption-column's default: the Hugging Face imagefolder convention
FILE_NAME = "file_name"
SIDECAR = ".txt"
MAX_SIDECAR = 1 << 20  # bytes of one caption file: a caption, not a corpus
MAX_METADATA = 1 << 30  # bytes of metadata.jsonl, read whole


def is_caption_file(name: str, stems: set[str], at_root: bool) -> bool:
    """Whether ``name``, in a folder whose other files have the stems ``stems``, holds captions:
    the root's metadata.jsonl, or a .txt beside a file of its stem (a sidecar). A lone notes.txt
    is not one: it stays in the listing (and is skipped as unreadable, as before)."""
    path = Path(name)
    return (at_root and name == METADATA) or (path.suffix.lower() == SIDECAR and path.stem in stems)


def _read(path: Path, limit: int, what: str) -> bytes:
    with open_input(path, what, error=DatasetError) as f:  # a FIFO or device is refused, never read
        data = f.read(limit + 1)
    if len(data) > limit:
        raise DatasetError(f"{path} is larger than {limit:,} bytes; is it {what}?")
    return data


def _lines(data: bytes, path: Path):
    """(line number, text) of each line, decoded one by one so that an error names its line."""
    for n, line in enumerate(data.split(b"\n"), 1):
        yield n, decode_text(line, f"{path} line {n}")


@dataclass
class Source:
    """Where a folder's captions come from: ``metadata`` (file name -> (caption, line)) read from
    ``path``, or sidecars (``metadata`` None) found beside each image when matched."""

    root: Path
    path: Path | None
    metadata: dict[str, tuple[str, int]] | None

    def match(self, rows: list[str]) -> list[str] | None:
        """One caption per row (a file relative to the root, as posix), "" for none; None when
        the folder has no captions at all."""
        if self.metadata is None:
            return _sidecars(self.root, rows)
        # a named file that is not a row was skipped (unreadable): it is not in the set, no error
        return [self.metadata[r][0] if r in self.metadata else "" for r in rows]


def source(root: Path, column: str = COLUMN) -> Source:
    """The caption source of the folder ``root``, its metadata.jsonl read and checked (before any
    image is decoded: a bad line fails at once, not after the decode)."""
    path = root / METADATA
    if probe(path)[1] == MISSING:
        return Source(root, None, None)
    rows = _metadata(path, column)
    for name, (_, n) in rows.items():
        if probe(root / name)[1] == MISSING:
            raise DatasetError(f"{path} line {n}: {name} is not in {root}; fix the {FILE_NAME} (a path "
                               "relative to the folder) or remove the line")
    return Source(root, path, rows)


def _metadata(path: Path, column: str) -> dict[str, tuple[str, int]]:
    out: dict[str, tuple[str, int]] = {}
    for n, line in _lines(_read(path, MAX_METADATA, "a metadata.jsonl of captions"), path):
        if not line.strip():
            continue  # blank lines (a trailing newline) hold nothing
        where = f"{path} line {n}"
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: not a JSON object; each line must be "
                               f'{{"{FILE_NAME}": "cat.png", "{column}": "a caption"}}')
        name = _file_name(row, where)
        if column not in row:
            have = ", ".join(sorted(k for k in row if k != FILE_NAME)) or "none"
            raise DatasetError(f"{where}: no {column!r} field (the caption column; its fields: {have}); "
                               "name the caption field with --caption-column")
        caption = row[column]
        if not isinstance(caption, str):
            raise DatasetError(f"{where}: {column!r} is {json.dumps(caption)[:40]}, not a string; give \"\" "
                               "for an image without a caption")
        if name in out:
            raise DatasetError(f"{where}: {name} again (first on line {out[name][1]}); give each image one line")
        out[name] = (caption.strip(), n)
    return out


def _file_name(row: dict, where: str) -> str:
    """The row's file_name as a posix path relative to the root ("./a.png" is "a.png")."""
    if FILE_NAME not in row:
        raise DatasetError(f"{where}: no {FILE_NAME!r} field; name the image, relative to the folder")
    name = row[FILE_NAME]
    norm = posixpath.normpath(name) if isinstance(name, str) and name else ""
    if not norm or norm.startswith(("/", "../")) or norm == "..":
        raise DatasetError(f"{where}: {FILE_NAME} {json.dumps(name)[:60]} is not a path inside the folder")
    return norm


def _sidecars(root: Path, rows: list[str]) -> list[str] | None:
    """Each row's cat.txt beside it, "" where there is none; None when no row has one."""
    out, found = [], False
    for row in rows:
        path = (root / row).with_suffix(SIDECAR)
        if probe(path)[1] == MISSING:
            out.append("")
            continue
        found = True
        text = "\n".join(line for _, line in _lines(_read(path, MAX_SIDECAR, "a caption file"), path))
        out.append(text.strip())
    return out if found else None
