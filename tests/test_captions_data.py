"""Captions of image folders: metadata.jsonl (Hugging Face imagefolder) and cat.txt sidecars,
through the decoded cache, prepared datasets and ``aigc datasets info`` (data/captions.py)."""

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from aigc_cli.core.errors import DatasetError, OptionError
from aigc_cli.data import cache, folder, load_dataset


def png(path, seed):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)).save(path)


def images(root, names=("a.png", "b.png", "sub/c.png", "sub/d.png")):
    for i, name in enumerate(names):
        png(root / name, i)
    return root


def metadata(root, *rows, raw=None):
    lines = raw if raw is not None else [json.dumps(r) for r in rows]
    (root / "metadata.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture
def decodes(monkeypatch):
    calls = []
    real = folder.load_folder
    monkeypatch.setattr(folder, "load_folder", lambda *a, **kw: calls.append(a[0]) or real(*a, **kw))
    return calls


def test_metadata_with_subfolders_and_empty_captions(tmp_path):
    root = images(tmp_path / "imgs")
    metadata(root, {"file_name": "sub/c.png", "text": "  a cat \n"}, {"file_name": "a.png", "text": "a dog"},
             {"file_name": "./sub/d.png", "text": "   "})
    ds = load_dataset(str(root))
    assert ds.sources == ["a.png", "b.png", "sub/c.png", "sub/d.png"]  # path order: the rows
    assert ds.captions == ["a dog", "", "a cat", ""]  # stripped; none and blank are ""
    assert ds.captioned == 2 and ds.info()["captions"] == 2
    assert ds.skipped == 0 and len(ds) == 4  # metadata.jsonl is not a skipped "image"


def test_caption_column(tmp_path):
    root = images(tmp_path / "imgs", ("a.png", "b.png"))
    metadata(root, {"file_name": "a.png", "prompt": "red"}, {"file_name": "b.png", "prompt": "blue"})
    ds = load_dataset(str(root), caption_column="prompt")
    assert ds.captions == ["red", "blue"] and ds.spec["caption_column"] == "prompt"
    with pytest.raises(DatasetError, match=r"metadata.jsonl line 1: no 'text' field .*prompt.*--caption-column"):
        load_dataset(str(root))
    with pytest.raises(OptionError, match="applies to image folders"):
        load_dataset("digits", caption_column="prompt")


def test_sidecars_and_no_captions(tmp_path):
    root = images(tmp_path / "imgs")
    assert load_dataset(str(root)).captions is None  # neither source: no captions, as before
    (root / "a.txt").write_bytes("\ufeffa cat\non a mat\n".encode())  # a BOM is dropped
    (root / "sub" / "d.txt").write_text("\n")
    (root / "notes.txt").write_text("not a sidecar")  # no notes.* image: still a skipped file
    ds = load_dataset(str(root))
    assert ds.captions == ["a cat\non a mat", "", "", ""] and ds.captioned == 1
    assert ds.skipped == 1
    # a metadata.jsonl is then the only source: the sidecars are ignored
    metadata(root, {"file_name": "b.png", "text": "from metadata"})
    assert load_dataset(str(root)).captions == ["", "from metadata", "", ""]


BAD_LINES = [
    (b'{"file_name": "a.png", "text": "ok"}\n\xff\xfe\n', "line 2 is not UTF-8"),
    (b'{"file_name": "a.png", "text": "ok"}\n["a.png", "x"]\n', "line 2: not a JSON object"),
    (b'{"file_name": "a.png", "text": "ok"}\nnot json\n', "line 2: not a JSON object"),
    (b'{"text": "x"}\n', "line 1: no 'file_name' field"),
    (b'{"file_name": "a.png", "caption": "x"}\n', "line 1: no 'text' field (the caption column; its fields: caption)"),
    (b'{"file_name": "gone.png", "text": "x"}\n', "line 1: gone.png is not in"),
    (b'{"file_name": "../a.png", "text": "x"}\n', "line 1: file_name \"../a.png\" is not a path inside the folder"),
    (b'{"file_name": "a.png", "text": 3}\n', "line 1: 'text' is 3, not a string"),
    (b'{"file_name": "a.png", "text": null}\n', "line 1: 'text' is null, not a string"),
    (b'{"file_name": "a.png", "text": "x"}\n\n{"file_name": "a.png", "text": "y"}\n', "line 3: a.png again (first on line 1)"),
]


@pytest.mark.parametrize("data, words", BAD_LINES, ids=[w.split(": ")[-1][:24] for _, w in BAD_LINES])
def test_bad_metadata_is_one_line_naming_file_and_line(tmp_path, cli, clean_error, data, words):
    root = images(tmp_path / "imgs", ("a.png", "b.png"))
    (root / "metadata.jsonl").write_bytes(data)
    with pytest.raises(DatasetError) as e:
        load_dataset(str(root))
    assert str(root / "metadata.jsonl") in str(e.value) and words in str(e.value)
    code, _, err = cli("datasets", "info", str(root))
    clean_error(code, err, "metadata.jsonl", words)


def test_bad_sidecar(tmp_path, cli, clean_error):
    root = images(tmp_path / "imgs", ("a.png", "b.png"))
    (root / "b.txt").write_bytes(b"fine\nbad \xff byte\n")
    # -q: sidecars are matched to the decoded rows, so "decoding images" comes first (decoded once: cached)
    code, _, err = cli("-q", "datasets", "info", str(root))
    clean_error(code, err, f"{root / 'b.txt'} line 2 is not UTF-8")


def test_an_unreadable_file_named_in_metadata_is_just_not_in_the_set(tmp_path):
    root = images(tmp_path / "imgs", ("a.png", "b.png"))
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 20)
    metadata(root, {"file_name": "broken.png", "text": "x"}, {"file_name": "b.png", "text": "y"})
    ds = load_dataset(str(root))
    assert ds.captions == ["", "y"] and ds.skipped == 1


def test_cached_load_matches_first_and_follows_edits(tmp_path, aigc_home, decodes):
    root = images(tmp_path / "imgs")
    metadata(root, {"file_name": "sub/d.png", "text": "d"}, {"file_name": "a.png", "text": "a"},
             {"file_name": "sub/c.png", "text": "c"})
    first = load_dataset(str(root))
    second = load_dataset(str(root))
    assert len(decodes) == 1 and second.mapped
    assert second.captions == first.captions == ["a", "", "c", "d"]
    assert torch.equal(first.images, second.images) and second.fingerprint == first.fingerprint
    assert second.fingerprint == folder.load_folder(root).fingerprint  # the same as without a cache
    del decodes[1:]  # that call was no load of the cache's
    # an edited caption takes effect without decoding again, and changes the fingerprint
    metadata(root, {"file_name": "sub/d.png", "text": "d"}, {"file_name": "a.png", "text": "A"},
             {"file_name": "sub/c.png", "text": "c"})
    third = load_dataset(str(root))
    assert len(decodes) == 1 and third.captions == ["A", "", "c", "d"]
    assert third.fingerprint != first.fingerprint and torch.equal(third.images, first.images)
    # a sidecar edited, after the metadata is gone: likewise
    os.unlink(root / "metadata.jsonl")
    (root / "b.txt").write_text("b")
    assert load_dataset(str(root)).captions == ["", "b", "", ""] and len(decodes) == 1


def test_fingerprint_changes_with_a_caption(tmp_path):
    root = images(tmp_path / "imgs", ("a.png", "b.png"))
    plain = load_dataset(str(root)).fingerprint
    (root / "a.txt").write_text("one")
    one = load_dataset(str(root)).fingerprint
    (root / "a.txt").write_text("two")
    assert len({plain, one, load_dataset(str(root)).fingerprint}) == 3


def test_prepared_keeps_its_captions(tmp_path, aigc_home, cli):
    root = images(tmp_path / "imgs", ("a.png", "b.png"))
    metadata(root, {"file_name": "a.png", "caption": "kept"})
    code, out, err = cli("datasets", "prepare", str(root), "--name", "pets", "--caption-column", "caption", "--json")
    assert code == 0, err
    assert json.loads(out)["captions"] == 1
    metadata(root, {"file_name": "a.png", "caption": "edited later"})
    ds = load_dataset("pets")
    assert ds.captions == ["kept", ""] and ds.sources == ["a.png", "b.png"]
    assert cache.captions_path("pets").exists() and cache.prune()[0] == 0 and cache.captions_path("pets").exists()
    with pytest.raises(OptionError, match="prepared with"):
        load_dataset("pets", caption_column="caption")
    assert cli("datasets", "rm", "pets")[0] == 0 and not cache.captions_path("pets").exists()


def test_datasets_info_counts_captions(tmp_path, cli):
    root = images(tmp_path / "imgs")
    metadata(root, {"file_name": "a.png", "text": "a"}, {"file_name": "sub/c.png", "text": "c"},
             {"file_name": "b.png", "text": ""})
    code, out, err = cli("datasets", "info", str(root))
    assert code == 0, err
    assert "2 of 4 images (2 without: trained unconditionally)" in out.decode()
    code, out, _ = cli("datasets", "info", str(root), "--json")
    assert json.loads(out)["captions"] == 2
    code, out, _ = cli("datasets", "info", str(images(tmp_path / "plain")))
    assert "captions" not in out.decode()  # a folder without captions says nothing of them


def test_train_takes_caption_column(tmp_path, aigc_home, cli, clean_error):
    root = images(tmp_path / "imgs", ("a.png", "b.png"))
    metadata(root, {"file_name": "a.png", "text": "x"})
    code, _, err = cli("-q", "train", "gan", "--dataset", root, "--caption-column", "prompt", "--epochs", "1")
    clean_error(code, err, "metadata.jsonl line 1: no 'prompt' field", "--caption-column")


def test_resume_keeps_the_caption_column_and_notices_an_edit(tmp_path, aigc_home, cli, tiny_gan):
    root = images(tmp_path / "imgs", [f"{i}.png" for i in range(16)])
    metadata(root, {"file_name": "0.png", "prompt": "zero"})
    code, _, err = cli("-q", "train", "gan", "--dataset", root, "--caption-column", "prompt", *tiny_gan, "--epochs", "1")
    assert code == 0, err
    spec = json.loads((aigc_home / "runs/run1/config.json").read_text())["dataset"]["spec"]
    assert spec["caption_column"] == "prompt"
    code, _, err = cli("-q", "train", "gan", "--resume", "run1", "--epochs", "2")  # read with its column
    assert code == 0, err
    metadata(root, {"file_name": "0.png", "prompt": "nought"})
    code, _, err = cli("-q", "train", "gan", "--resume", "run1", "--epochs", "3")
    assert code == 1 and "has changed since run1 started" in err
