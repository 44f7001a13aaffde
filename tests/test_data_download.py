"""Downloads against a real HTTP server on 127.0.0.1; never the internet."""

import functools
import gzip
import hashlib
import http.server
import socket
import struct
import threading

import numpy as np
import pytest

from aigc_cli.core.errors import DatasetError
from aigc_cli.data import load_dataset, named

IMAGES, LABELS = "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"


def idx_gz(arr: np.ndarray) -> bytes:
    return gzip.compress(bytes([0, 0, 8, arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape) + arr.tobytes())


@pytest.fixture
def mirror(tmp_path, monkeypatch, aigc_home):
    """A local mirror serving a tiny fake MNIST test split; yields (files {name: bytes}, request log)."""
    rng = np.random.default_rng(0)
    files = {IMAGES: idx_gz(rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)),
             LABELS: idx_gz(np.arange(6, dtype=np.uint8))}
    root = tmp_path / "www"
    (root / "mnist").mkdir(parents=True)
    for name, data in files.items():
        (root / "mnist" / name).write_bytes(data)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):  # keep test output clean; remember the paths instead
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AIGC_DATASET_MIRROR", f"http://127.0.0.1:{server.server_address[1]}")
    md5s = {name: hashlib.md5(data).hexdigest() for name, data in files.items()}
    monkeypatch.setitem(named.SOURCES, "mnist", named.Source(["http://invalid.example/"], {"test": md5s}))
    yield files, requests
    server.shutdown()
    server.server_close()


def test_download_checksum_and_cache_reuse(mirror, aigc_home):
    files, requests = mirror
    calls = []
    ds = load_dataset("mnist", split="test", progress=lambda *a: calls.append(a))
    assert tuple(ds.images.shape) == (6, 1, 28, 28) and ds.labels.tolist() == list(range(6))
    assert ds.classes == [str(i) for i in range(10)] and ds.name == "mnist (test)"
    assert sorted(requests) == sorted([f"/mnist/{IMAGES}", f"/mnist/{LABELS}"])
    cached = aigc_home / "cache" / "datasets" / "mnist"
    assert {p.name for p in cached.iterdir()} == set(files)  # no temp files left
    assert calls and calls[-1][1] == calls[-1][2]  # progress reached the Content-Length
    assert named.download_status("mnist") == "downloaded"

    n = len(requests)
    again = load_dataset("mnist", split="test")
    assert len(requests) == n  # cache hit: no request
    assert again.fingerprint == ds.fingerprint


def test_checksum_mismatch_leaves_nothing(mirror, aigc_home, monkeypatch):
    src = named.SOURCES["mnist"]
    monkeypatch.setitem(src.files, "test", {IMAGES: "0" * 32, LABELS: src.files["test"][LABELS]})
    with pytest.raises(DatasetError, match="checksum mismatch"):
        load_dataset("mnist", split="test")
    folder = aigc_home / "cache" / "datasets" / "mnist"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_corrupt_cached_file_is_replaced(mirror, aigc_home):
    folder = aigc_home / "cache" / "datasets" / "mnist"
    folder.mkdir(parents=True)
    (folder / IMAGES).write_bytes(b"partial")
    load_dataset("mnist", split="test")
    assert (folder / IMAGES).read_bytes() == mirror[0][IMAGES]


def test_server_unreachable(mirror, aigc_home, monkeypatch):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("AIGC_DATASET_MIRROR", f"http://127.0.0.1:{port}/")
    with pytest.raises(DatasetError) as e:
        load_dataset("mnist", split="test")
    msg = str(e.value)
    folder = aigc_home / "cache" / "datasets" / "mnist"
    assert f"http://127.0.0.1:{port}/mnist/{IMAGES}" in msg and str(folder) in msg and f"put {IMAGES}" in msg
    assert "\n" not in msg


def test_files_put_by_hand_are_used_offline(mnist_dir, aigc_home, monkeypatch):
    monkeypatch.setenv("AIGC_DATASET_MIRROR", "http://127.0.0.1:9/")  # would fail if used
    folder = aigc_home / "cache" / "datasets" / "mnist"
    folder.mkdir(parents=True)
    for name in (IMAGES, LABELS):
        (folder / name).write_bytes((mnist_dir / name).read_bytes())
    ds = load_dataset("mnist", split="test")  # the real md5s from torchvision's table
    assert tuple(ds.images.shape) == (10000, 1, 28, 28) and ds.num_classes == 10
    assert named.download_status("mnist") == "partial"


def test_cifar_binary_parsing(tmp_path, monkeypatch, aigc_home):
    import io
    import tarfile

    rng = np.random.default_rng(0)
    records = {b: rng.integers(0, 256, (3, 3073), dtype=np.uint8) for b in ["test_batch.bin"] + [f"data_batch_{i}.bin" for i in range(1, 6)]}
    for r in records.values():
        r[:, 0] %= 10
    folder = aigc_home / "cache" / "datasets" / "cifar10"
    folder.mkdir(parents=True)
    with tarfile.open(folder / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for name, r in records.items():
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = r.nbytes
            tar.addfile(info, io.BytesIO(r.tobytes()))
    md5 = hashlib.md5((folder / "cifar-10-binary.tar.gz").read_bytes()).hexdigest()
    files = {s: {"cifar-10-binary.tar.gz": md5} for s in ("train", "test")}
    monkeypatch.setitem(named.SOURCES, "cifar10", named.Source(["http://127.0.0.1:9/"], files))
    test = load_dataset("cifar10", split="test")
    assert tuple(test.images.shape) == (3, 3, 32, 32) and test.classes[0] == "airplane"
    assert np.array_equal(test.images.reshape(3, -1).numpy(), records["test_batch.bin"][:, 1:])
    assert test.labels.tolist() == records["test_batch.bin"][:, 0].tolist()
    assert len(load_dataset("cifar10")) == 15


@pytest.mark.parametrize("announce", [True, False])
def test_a_download_past_the_size_cap_is_stopped_before_the_checksum(aigc_home, monkeypatch, announce):
    from aigc_cli.data import download

    sent = []

    class Endless(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # 64 MiB of zeros, announced or not
            self.send_response(200)
            if announce:
                self.send_header("Content-Length", str(64 << 20))
            self.end_headers()
            try:
                for _ in range(4096):
                    self.wfile.write(bytes(16384))
                    sent.append(16384)
            except OSError:  # the client hung up, as it should
                pass

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Endless)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("AIGC_DATASET_MIRROR", f"http://127.0.0.1:{server.server_address[1]}")
        monkeypatch.setattr(download, "MAX_BYTES", 100_000)
        md5s = {IMAGES: hashlib.md5(bytes(64 << 20)).hexdigest(), LABELS: "0" * 32}  # the checksum would pass
        monkeypatch.setitem(named.SOURCES, "mnist", named.Source(["http://invalid.example/"], {"test": md5s}))
        words = "announces 67,108,864 bytes, more" if announce else "sent more"
        with pytest.raises(DatasetError, match=f"{words} than the 100,000-byte limit"):
            load_dataset("mnist", split="test")
    finally:
        server.shutdown()
        server.server_close()
    folder = aigc_home / "cache" / "datasets" / "mnist"
    assert not folder.exists() or list(folder.iterdir()) == []
    assert sum(sent) < 32 << 20  # the client stopped reading long before the end
