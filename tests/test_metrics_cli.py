"""``aigc eval``: sides, output, caching, errors, and the training hook.

Most tests swap the Inception network for a cheap deterministic stand-in (64-d features from
pooled pixels), so they test the plumbing in milliseconds; the real network runs in a few.
"""

from __future__ import annotations

import json
import socket

import numpy as np
import pytest
import torch


DIM = 64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AIGC_INCEPTION_WEIGHTS", raising=False)
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"http://127.0.0.1:{port}/pt_inception-2015-12-05-6726825d.pth"
    monkeypatch.setenv("AIGC_INCEPTION_URL", url)  # offline: nothing listens there
    return tmp_path / "home"


@pytest.fixture
def fake(home, fake_inception):
    """The stand-in network (conftest.py), and a dummy weights file to name (never loaded)."""
    return fake_inception


def _folder(path, count, seed, size=16, grey=False):
    from PIL import Image

    path.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        img = rng.integers(0, 256, (size, size) if grey else (size, size, 3), dtype=np.uint8)
        Image.fromarray(img).save(path / f"{i:03d}.png")
    return path


def _npz(path, count, seed):
    rng = np.random.default_rng(seed)
    np.savez(path, images=rng.integers(0, 200, (count, 8, 8), dtype=np.uint8), labels=np.zeros(count, np.int64))
    return path


def test_fid_json_between_a_folder_and_an_array_dataset(fake, tmp_path, cli):
    a = _folder(tmp_path / "a", 6, 0)
    b = _npz(tmp_path / "b.npz", 9, 1)
    code, out, err = cli("eval", "fid", a, b, "--inception-weights", fake.weights, "--json")
    assert code == 0, err
    r = json.loads(out)
    for key in ("fid", "n_a", "n_b", "weights_sha256", "preprocessing", "a", "b", "warnings"):
        assert key in r
    assert r["fid"] > 0 and (r["n_a"], r["n_b"]) == (6, 9)
    assert (r["a"]["kind"], r["b"]["kind"]) == ("folder", "dataset")
    assert len(r["weights_sha256"]) == 64 and "align_corners=False" in r["preprocessing"]
    assert any("biased" in w for w in r["warnings"]) and "biased" in err


def test_fid_human_output_is_a_table_and_a_value(fake, tmp_path, cli):
    a = _folder(tmp_path / "a", 5, 0)
    b = _folder(tmp_path / "b", 5, 1, grey=True)
    code, out, err = cli("eval", "fid", a, b, "--inception-weights", fake.weights)
    assert code == 0, err
    assert out.decode().startswith("fid ") and float(out.split()[1]) > 0
    assert "FID" in err and "folder" in err


def test_dataset_statistics_are_cached(fake, home, tmp_path, cli):
    ref = _npz(tmp_path / "ref.npz", 12, 1)
    first = _folder(tmp_path / "first", 5, 0)
    second = _folder(tmp_path / "second", 5, 2)
    code, out, err = cli("eval", "fid", first, ref, "--inception-weights", fake.weights, "--json")
    assert code == 0, err
    assert sorted(fake.calls) == [5, 12]
    assert len(list((home / "cache" / "fid-stats").glob("*.npz"))) == 2  # the folder and the dataset
    fake.calls.clear()
    code, out, err = cli("eval", "fid", second, ref, "--inception-weights", fake.weights, "--json")
    assert code == 0, err
    assert fake.calls == [5]  # only the new side went through the network
    r = json.loads(out)
    assert r["b"]["cached"] is True and not r["a"].get("cached")
    # --ref-n is part of the key: a different count is computed afresh.
    fake.calls.clear()
    code, out, err = cli("eval", "fid", second, ref, "--ref-n", "7", "--inception-weights", fake.weights, "--json")
    assert code == 0, err
    assert fake.calls == [7]  # the 5-image folder is under 7: all of it, as cached


def test_stats_files_are_a_side_and_need_no_weights(fake, home, tmp_path, cli, monkeypatch):
    a = _folder(tmp_path / "a", 6, 0)
    b = _npz(tmp_path / "b.npz", 8, 1)
    sa, sb = tmp_path / "a_stats.npz", tmp_path / "b_stats.npz"
    code, out, err = cli("eval", "stats", a, "-o", sa, "--inception-weights", fake.weights, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["n"] == 6 and r["path"] == str(sa)
    with np.load(sa, allow_pickle=False) as f:  # pytorch-fid's format: mu and sigma
        assert f["mu"].shape == (DIM,) and f["sigma"].shape == (DIM, DIM) and f["mu"].dtype == np.float64
    code, out, err = cli("eval", "fid", b, a, "--save-stats", sb, "--inception-weights", fake.weights, "--json")
    assert code == 0, err
    direct = json.loads(out)["fid"]
    # Two statistics files: no network, no weights, no download.
    fake.calls.clear()
    code, out, err = cli("eval", "fid", sb, sa, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["fid"] == pytest.approx(direct, rel=1e-9) and fake.calls == []
    assert (r["a"]["kind"], r["n_a"], r["n_b"]) == ("stats", 8, 6)
    assert r["weights_sha256"] == json.loads(out)["weights_sha256"] and r["weights_sha256"]
    code, out, err = cli("eval", "fid", sa, a, "--inception-weights", fake.weights, "--json")
    assert code == 0 and abs(json.loads(out)["fid"]) < 1e-6


def test_kid_is_pr_json(fake, tmp_path, cli):
    a = _folder(tmp_path / "a", 12, 0)
    b = _npz(tmp_path / "b.npz", 10, 1)
    code, out, err = cli("eval", "kid", a, b, "--subsets", "5", "--inception-weights", fake.weights, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["subset_size"] == 10 and r["subsets"] == 5 and "kid" in r and "kid_std" in r
    assert any("subset size" in w for w in r["warnings"])
    code, out, err = cli("eval", "is", a, "--inception-weights", fake.weights, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["is"] >= 1.0 and r["splits"] == 10 and r["n_a"] == 12
    code, out, err = cli("eval", "pr", a, b, "--inception-weights", fake.weights, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert 0 <= r["precision"] <= 1 and 0 <= r["recall"] <= 1 and r["k"] == 3
    assert fake.calls == [12, 10, 12, 12, 10] or len(fake.calls) <= 5  # the cache serves repeats


def test_a_statistics_file_cannot_feed_kid(fake, tmp_path, cli):
    a = _folder(tmp_path / "a", 6, 0)
    s = tmp_path / "s.npz"
    assert cli("eval", "stats", a, "-o", s, "--inception-weights", fake.weights)[0] == 0
    code, out, err = cli("eval", "kid", s, a, "--inception-weights", fake.weights)
    assert code == 1 and "statistics file" in err and len(err.strip().splitlines()) == 1


def test_missing_weights_is_one_line_naming_the_ways_out(home, tmp_path, cli):
    import os

    a = _folder(tmp_path / "a", 3, 0)
    code, out, err = cli("eval", "fid", a, a)
    assert code == 1 and out == b""
    (line,) = [x for x in err.splitlines() if x.startswith("aigc: error:")]  # one line, after the notice
    assert "Traceback" not in err
    assert "--inception-weights" in line and "AIGC_INCEPTION_WEIGHTS" in line and os.environ["AIGC_INCEPTION_URL"] in line


def test_corrupt_weights_file_is_a_short_error(home, tmp_path, cli):
    a = _folder(tmp_path / "a", 3, 0)
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"\x80\x02garbage" * 50)
    code, out, err = cli("eval", "fid", a, a, "--inception-weights", bad)
    assert code == 1 and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert "cannot read Inception weights" in err
    code, out, err = cli("eval", "fid", a, a, "--inception-weights", tmp_path / "absent.pth")
    assert code == 1 and "--inception-weights" in err


def test_unknown_side_is_an_error(fake, tmp_path, cli):
    code, out, err = cli("eval", "fid", "no-such-thing", "shapes", "--inception-weights", fake.weights)
    assert code == 1 and "no-such-thing" in err and "dataset" in err and "run" in err


def test_side_resolution(home, tmp_path):
    from aigc_cli.metrics.sides import resolve_side
    from aigc_cli.metrics.stats import Stats, save_stats

    s = save_stats(tmp_path / "s.npz", Stats(np.zeros(4), np.eye(4), 10))
    assert resolve_side(str(s)).kind == "stats"
    d = _npz(tmp_path / "d.npz", 5, 0)
    assert resolve_side(str(d)).kind == "dataset"
    side = resolve_side("shapes", split="test", ref_n=20)
    assert (side.kind, side.n, side.details["available"], side.details["split"]) == ("dataset", 20, 4096, "test")
    again = resolve_side("shapes", split="test", ref_n=20)
    assert torch.equal(side.images, again.images) and side.fingerprint == again.fingerprint  # a fixed subset
    folder = _folder(tmp_path / "imgs" / "class0", 4, 0)
    side = resolve_side(str(folder.parent))
    assert (side.kind, side.n) == ("folder", 4)  # searched recursively


def test_run_side_samples_on_the_fly(fake, home, tmp_path, cli, monkeypatch):
    from aigc_cli import generation
    from aigc_cli.runs.store import create_run

    run = create_run("gan", name="tiny", config={"family": "gan", "model": {}, "train": {}, "dataset": {}})
    asked = []

    class Gen:
        def options(self, given):
            return {k: v for k, v in given.items() if v is not None}

        def sample_uint8(self, n, seed, batch_size=256, **options):
            asked.append((n, seed))
            g = torch.Generator().manual_seed(seed)
            return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=g)

    monkeypatch.setattr(generation, "load_generator", lambda ref, device="cpu", command=None: asked.append(ref) or Gen())
    b = _npz(tmp_path / "b.npz", 9, 1)
    code, out, err = cli("eval", "fid", "tiny", b, "-n", "8", "--seed", "3", "--inception-weights", fake.weights, "--json")
    assert code == 0, err
    r = json.loads(out)
    assert (r["a"]["kind"], r["a"]["seed"], r["n_a"]) == ("run", 3, 8)
    assert asked == [run.id, (8, 3)]


def test_out_of_memory_halves_the_batch_and_goes_on():
    from aigc_cli.metrics.features import Extractor

    ex = Extractor.__new__(Extractor)
    ex.device, ex.batch_size, halved = torch.device("cpu"), 8, []
    ex.on_batch_halved = halved.append

    def forward(chunk):
        if len(chunk) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory")
        v = chunk.float().mean(dim=(1, 2, 3))[:, None]
        return v.expand(-1, 2048), v.expand(-1, 1008)

    ex._forward = forward
    images = torch.arange(11, dtype=torch.uint8)[:, None, None, None].expand(11, 3, 4, 4)
    out = ex.extract([images[:7], images[7:]])
    assert halved == [4, 2] and ex.batch_size == 2
    assert np.array_equal(out.features[:, 0], np.arange(11, dtype=np.float32))


def test_fid_against_dataset_for_training(fake, home, tmp_path, monkeypatch):
    from aigc_cli.data.load import load_dataset
    from aigc_cli.metrics import fid_against_dataset

    data = load_dataset(str(_npz(tmp_path / "train.npz", 20, 0)))

    def sampler(n):
        return torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(n))

    assert fid_against_dataset(sampler, data, 10) is None  # no weights anywhere: skipped
    monkeypatch.setenv("AIGC_INCEPTION_WEIGHTS", fake.weights)
    value = fid_against_dataset(sampler, data, 10)
    assert isinstance(value, float) and value > 0
    assert fake.calls == [10, 10]
    fake.calls.clear()
    assert fid_against_dataset(sampler, data, 10) == pytest.approx(value)
    assert fake.calls == [10]  # the training data's statistics came from the cache


def test_training_evaluator_notices_once_without_usable_weights(home, tmp_path, monkeypatch):
    from aigc_cli.data.load import load_dataset
    from aigc_cli.training.evaluation import make_evaluator

    said = []
    evaluate_fn = make_evaluator(None, {"eval": {"fid_n": 4}}, None, "cpu", say=said.append)
    assert evaluate_fn(1) is None and evaluate_fn(2) is None
    assert len(said) == 1 and "AIGC_INCEPTION_WEIGHTS" in said[0]
    # A corrupt file: skipped with a notice too, training goes on.
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"garbage" * 10)
    monkeypatch.setenv("AIGC_INCEPTION_WEIGHTS", str(bad))
    said.clear()
    data = load_dataset(str(_npz(tmp_path / "d.npz", 6, 0)))
    evaluate_fn = make_evaluator(None, {"eval": {"fid_n": 4}}, data, "cpu", say=said.append)
    assert evaluate_fn(1) is None and evaluate_fn(2) is None
    assert len(said) == 1 and "cannot read Inception weights" in said[0]


@pytest.fixture(scope="module")
def real_weights(tmp_path_factory):
    from aigc_cli.metrics.testing import write_random_weights

    return write_random_weights(tmp_path_factory.mktemp("w") / "random.pth", seed=5)


def test_real_network_on_a_grey_dataset_and_a_folder(home, tmp_path, cli, real_weights):
    a = _folder(tmp_path / "a", 4, 0, size=12)
    b = _npz(tmp_path / "b.npz", 4, 1)
    code, out, err = cli("eval", "pr", a, b, "--inception-weights", real_weights, "--batch-size", "4", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert r["features"] == "inception pool 2048" and r["n_a"] == 4 and r["n_b"] == 4
    assert r["device"] == "cpu" and r["weights"] == str(real_weights)
    entries = list((home / "cache" / "fid-stats").glob("*.npz"))
    assert len(entries) == 2
    with np.load(entries[0], allow_pickle=False) as f:
        feats = f["features"]
        assert feats.shape == (4, 2048) and np.isfinite(feats).all() and feats.std() > 0
        assert f["logits"].shape == (4, 1008)


def test_training_records_fid_and_a_trained_run_is_a_side(fake, home, tiny_npz, cli, monkeypatch):
    """With the trainer's --eval-every wiring: FID rows in metrics.jsonl; then the run as a side."""
    monkeypatch.setenv("AIGC_INCEPTION_WEIGHTS", fake.weights)
    tiny = ["--arch", "mlp", "--width", "4", "--latent-dim", "8", "--batch-size", "16"]
    code, out, err = cli("train", "gan", "--dataset", tiny_npz, *tiny, "--epochs", "2", "--eval-every", "1",
                         "--fid-n", "16", "--json")  # fmt: skip
    assert code == 0, err
    run_id = json.loads(out)["id"]
    from aigc_cli.runs.store import resolve_run

    rows = [r for r in resolve_run(run_id).read_metrics() if "fid" in r]
    assert [r["epoch"] for r in rows] == [1, 2] and all(r["fid"] > 0 and r["fid_n"] == 16 for r in rows)
    fake.calls.clear()
    code, out, err = cli("eval", "fid", run_id, tiny_npz, "-n", "16", "--ref-n", "16", "--json")
    assert code == 0, err
    r = json.loads(out)
    assert (r["a"]["kind"], r["n_a"], r["n_b"]) == ("run", 16, 16)
    assert r["b"]["cached"] is True and fake.calls == [16]  # the reference came from training's cache
    assert r["fid"] == pytest.approx(rows[-1]["fid"], rel=1e-6)  # same weights, same seed 0: same samples


def test_resolution_reads_folders_and_datasets_as_training_sees_them(fake, tmp_path, cli, clean_error):
    from PIL import Image

    big = tmp_path / "photos"
    big.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # larger than a folder may be without --resolution when read as a dataset
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), np.uint8)).save(big / f"{i}.png")
    small = _folder(tmp_path / "small", 6, 1, size=16)
    code, out, err = cli("eval", "fid", big, small, "--resolution", "16", "--inception-weights", fake.weights, "--json")
    assert code == 0, err
    result = json.loads(out)
    a = result["a"]
    assert a["kind"] == "dataset" and a["resolution"] == 16 and a["n"] == 6, a
    code, out, err = cli("eval", "fid", big, small, "--inception-weights", fake.weights, "--json")  # natively: pytorch-fid's folder reading
    assert code == 0, err
    native = json.loads(out)
    assert native["a"]["kind"] == "folder"
    assert native["fid"] != result["fid"]
    code, _, err = cli("eval", "stats", "digits", "--resolution", "12", "-o", tmp_path / "d.npz",
                      "--inception-weights", fake.weights, "--json")
    assert code == 0, err
    code, _, err = cli("eval", "fid", big, small, "--resolution", "2")
    assert code == 2 and "--resolution" in err
