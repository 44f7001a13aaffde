"""Finding, downloading (from a local HTTP server) and checking the Inception weights file."""

from __future__ import annotations

import hashlib
import http.server
import threading
from pathlib import Path

import pytest
import torch

from aigc_cli.core.errors import WeightsError
from aigc_cli.metrics import weights as W
from aigc_cli.metrics.testing import random_state_dict


@pytest.fixture(scope="module")
def state():
    return random_state_dict(seed=3)


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory, state):
    path = tmp_path_factory.mktemp("w") / "random.pth"
    torch.save(state, path)
    return path


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("AIGC_HOME", str(tmp_path / "home"))
    monkeypatch.delenv(W.ENV_WEIGHTS, raising=False)
    monkeypatch.delenv(W.ENV_URL, raising=False)
    return tmp_path


@pytest.fixture(scope="module")
def server(weights_file):
    """Serves /good.pth (the random weights), /bad.pth (garbage) on 127.0.0.1."""
    files = {"/good.pth": weights_file.read_bytes(), "/bad.pth": b"not a torch file" * 100}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            if self.path == "/endless":  # no Content-Length, and more bytes than any cap in the tests
                self.send_response(200)
                self.end_headers()
                try:
                    for _ in range(4096):  # 64 MiB at most
                        self.wfile.write(bytes(16384))
                except OSError:
                    pass
                return
            body = files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", files
    httpd.shutdown()
    httpd.server_close()


def _closed_port_url() -> str:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    return f"http://127.0.0.1:{port}/{W.FILENAME}"


def test_lookup_order(env, weights_file, monkeypatch):
    assert W.find_weights() is None
    cached = W.cached_weights_path()
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert W.find_weights() == cached
    monkeypatch.setenv(W.ENV_WEIGHTS, str(weights_file))
    assert W.find_weights() == weights_file
    other = env / "other.pth"
    other.write_bytes(b"y")
    assert W.find_weights(str(other)) == other


def test_named_but_missing_files_are_errors(env, monkeypatch):
    with pytest.raises(WeightsError, match="--inception-weights"):
        W.find_weights(str(env / "nope.pth"))
    monkeypatch.setenv(W.ENV_WEIGHTS, str(env / "nope.pth"))
    with pytest.raises(WeightsError, match=W.ENV_WEIGHTS):
        W.find_weights()


def test_download_with_wrong_sha256_keeps_nothing(env, server):
    base, _ = server
    dest = env / "cache" / W.FILENAME
    with pytest.raises(WeightsError, match="sha256"):
        W.download_weights(f"{base}/bad.pth", dest, sha256="0" * 64)
    assert not dest.exists()
    assert list(dest.parent.iterdir()) == []


def test_locate_downloads_from_the_overridden_url_into_the_cache(env, server, monkeypatch):
    base, files = server
    # Not the real file: the canonical sha256 rejects it, and nothing is kept.
    monkeypatch.setenv(W.ENV_URL, f"{base}/bad.pth")
    with pytest.raises(WeightsError, match=f"expected {W.SHA256}"):
        W.locate_weights()
    assert not W.cached_weights_path().exists()
    # A file whose sha256 is the expected one is kept.
    body = files["/good.pth"]
    sha = hashlib.sha256(body).hexdigest()
    monkeypatch.setenv(W.ENV_URL, f"{base}/good.pth")
    monkeypatch.setattr(W, "SHA256", sha)
    announced, seen = [], []
    path = W.locate_weights(on_download=lambda url, dest: announced.append(url), progress=lambda d, t: seen.append((d, t)))
    assert path == W.cached_weights_path() and path.read_bytes() == body
    assert announced == [f"{base}/good.pth"]
    assert seen[-1] == (len(body), len(body))
    assert W.file_sha256(path) == sha
    assert [p.name for p in path.parent.iterdir() if p.name.endswith(".tmp")] == []
    assert W.locate_weights() == path  # found in the cache now, no second download


def test_the_canonical_checksum_is_the_full_sha256():
    assert len(W.SHA256) == 64 and W.FILENAME.endswith(f"-{W.SHA256[:8]}.pth")


@pytest.mark.parametrize("path,words", [("/good.pth", "announces"), ("/endless", "sent more")])
def test_a_download_past_the_size_cap_is_stopped_and_not_kept(env, server, path, words):
    base, files = server
    dest = env / "cache" / W.FILENAME
    sha = hashlib.sha256(files["/good.pth"]).hexdigest()  # the checksum is not what stops it
    with pytest.raises(WeightsError, match=f"{words}.* than the 1,000-byte limit"):
        W.download_weights(f"{base}{path}", dest, sha256=sha, max_bytes=1000)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_a_corrupt_download_is_refused(env, server):
    base, files = server
    dest = env / "cache" / W.FILENAME
    sha = hashlib.sha256(files["/bad.pth"]).hexdigest()
    with pytest.raises(WeightsError, match="cannot read"):
        W.download_weights(f"{base}/bad.pth", dest, sha256=sha)
    assert not dest.exists()


def test_offline_error_names_the_option_the_variable_and_the_url(env, monkeypatch):
    url = _closed_port_url()
    monkeypatch.setenv(W.ENV_URL, url)
    with pytest.raises(W.WeightsUnavailable) as e:
        W.locate_weights()
    message = str(e.value)
    assert "--inception-weights" in message and W.ENV_WEIGHTS in message and url in message
    assert "\n" not in message
    with pytest.raises(W.WeightsUnavailable, match="--inception-weights"):
        W.locate_weights(download=False)


def test_the_default_url_is_pytorch_fids_release(monkeypatch):
    monkeypatch.delenv(W.ENV_URL, raising=False)
    assert W.weights_url() == (
        "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth"
    )


@pytest.mark.parametrize(
    "damage",
    ["truncated", "garbage", "missing_key", "wrong_shape", "extra_key", "nan", "pickled_object", "not_a_dict"],
)
def test_bad_weights_files_are_short_errors(env, weights_file, state, damage):
    path = env / f"{damage}.pth"
    if damage == "truncated":
        path.write_bytes(weights_file.read_bytes()[: 1 << 20])
    elif damage == "garbage":
        path.write_bytes(b"\x00garbage" * 1000)
    else:
        state = dict(state)
        if damage == "missing_key":
            del state["Mixed_7c.branch_pool.conv.weight"]
        elif damage == "wrong_shape":
            state["fc.weight"] = torch.zeros(1000, 2048)
        elif damage == "extra_key":
            state["AuxLogits.fc.weight"] = torch.zeros(3)
        elif damage == "nan":
            key = "Mixed_6a.branch3x3.bn.running_var"
            state[key] = state[key].clone()
            state[key][0] = float("nan")
        elif damage == "pickled_object":
            state = {"model": Path("/tmp")}  # unpickling this needs more than tensors: refused
        elif damage == "not_a_dict":
            state = [torch.zeros(1)]
        torch.save(state, path)
    with pytest.raises(WeightsError) as e:
        W.read_state_dict(path)
    assert "\n" not in str(e.value) and len(str(e.value)) < 400


def test_state_dict_without_num_batches_tracked_loads(env, state):
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    path = env / "older.pth"
    torch.save(state, path)
    model, info = W.load_model(path)
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert torch.equal(model.fc.weight, state["fc.weight"])
