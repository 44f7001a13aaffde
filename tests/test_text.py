"""The text family (issue 19): training, sampling, the KV cache and RNN state, corpora, errors.

Tiny models on a 20,000-character slice of the built-in corpus: 35 steps an epoch at batch 32
and context 16.
"""

import functools
import hashlib
import http.server
import json
import math
import os
import signal
import subprocess
import sys
import threading

import pytest
import torch

TINY = ["--layers", "1", "--width", "16", "--heads", "2", "--context", "16", "--batch-size", "32", "--seed", "1", "--lr", "1e-2",
        "--warmup", "5"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, corpus, cli_captured):
    """A two-epoch GPT run and a one-epoch GRU run in one store: (home, run ids)."""
    home = tmp_path_factory.mktemp("home")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_HOME", str(home))
        for arch, epochs in (("gpt", 2), ("gru", 1)):
            code, out, err = cli_captured("-q", "train", "text", "--dataset", corpus, "--arch", arch, *TINY,
                                          "--epochs", epochs)
            assert code == 0, err
    return home


def test_training_logs_tokens_validation_and_previews(trained, run_rows):
    rows = run_rows(trained)
    steps = [r for r in rows if "loss" in r]
    assert steps and all(r["tokens_per_s"] > 0 and math.isfinite(r["grad_norm"]) for r in steps)
    val = [r for r in rows if "val_loss" in r]
    assert [r["epoch"] for r in val] == [1, 2]
    assert val[1]["val_bits_per_token"] == pytest.approx(val[1]["val_loss"] / math.log(2))
    config = json.loads((trained / "runs/run1/config.json").read_text())
    vocab = config["model"]["vocab_size"]
    assert config["model"]["alphabet"] and len(config["model"]["alphabet"]) == vocab
    # Two epochs of a tiny GPT already beat guessing uniformly over the alphabet by far.
    assert val[1]["val_loss"] < math.log(vocab) - 0.8, val
    preview = (trained / "runs/run1/samples/samples_epoch002.txt").read_text(encoding="utf-8")
    assert len(preview) > 200 and set(preview) <= set(config["model"]["alphabet"]) | {"-"}
    meta = json.loads((trained / "runs/run2/run.json").read_text())
    assert meta["status"] == "completed" and meta["family"] == "text"


def test_sampling_is_seeded_streamed_and_json(trained, cli, monkeypatch):
    monkeypatch.setenv("AIGC_HOME", str(trained))
    args = ["sample", "run1", "--prompt", "ROMEO:", "--length", "60", "--seed", "4"]
    code, out, err = cli(*args)
    assert code == 0, err
    text = out.decode()
    assert text.startswith("ROMEO:") and text.endswith("\n")
    assert cli(*args)[1] == out  # the same seed, the same text
    assert cli(*args[:-1], "5")[1] != out
    code, js, err = cli(*args, "--json")
    summary = json.loads(js)
    assert summary["continuations"] == [text[len("ROMEO:"):-1]]  # streamed = the JSON's continuation
    assert summary["seed"] == 4 and summary["length"] == 60 and summary["temperature"] == 0.8
    code, js, err = cli("sample", "run1", "-n", "3", "--length", "20", "--seed", "1", "--json")
    many = json.loads(js)["continuations"]
    assert len(many) == 3 and all(len(c) == 20 for c in many) and len(set(many)) == 3
    code, out, err = cli("sample", "run1", "-n", "3", "--length", "20", "--seed", "1")
    # Streamed (the first continuation token by token, then the others): the same text as --json.
    assert out.decode() == "\n---\n".join("\n" + c for c in many) + "\n"


@pytest.fixture
def sample_proc(aigc_env):
    """``sample_proc(home, *args, **env)``: ``aigc sample ARGS`` started with binary pipes (what a
    pipe reader gets, byte for byte)."""
    procs = []

    def start(home, *args, **env):
        procs.append(subprocess.Popen([sys.executable, "-m", "aigc_cli", "sample", *map(str, args)],
                                      env=aigc_env(home, **env), stdout=subprocess.PIPE, stderr=subprocess.PIPE))
        return procs[-1]

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()


def test_several_continuations_stream_the_first_as_it_is_drawn(trained, cli, monkeypatch, tmp_path, sample_proc,
                                                               paused):
    """-n 3 to a pipe: while the 10th token of 40 is drawn, the pipe already holds the prompt and
    the first continuation's first 10 characters (before, nothing until all three were done)."""
    args = ["run1", "-n", "3", "--prompt", "ROMEO:", "--length", "40", "--seed", "4"]
    proc = sample_proc(trained, *args, AIGC_TEST_PAUSE="sample:token:10", AIGC_TEST_PAUSE_DIR=tmp_path)
    try:
        paused(proc, tmp_path / "paused-1")
        os.set_blocking(proc.stdout.fileno(), False)
        early = proc.stdout.read() or b""
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    monkeypatch.setenv("AIGC_HOME", str(trained))
    first = json.loads(cli("sample", *args, "--json")[1])["continuations"][0]
    assert early.decode() == "ROMEO:" + first[:10]


@pytest.mark.parametrize("n", [1, 3])
def test_a_reader_that_leaves_ends_sampling_quietly(trained, n, sample_proc):
    """`aigc sample RUN --length 100000 | head -c 10`: exit 141 (128 + SIGPIPE, as a tool killed
    by SIGPIPE reports in a shell) and nothing on stderr, not even Python's "Exception ignored"
    at exit (before: exit 1). The 100,000 tokens are not drawn: it stops at the next write."""
    proc = sample_proc(trained, "run2", "-n", n, "--length", "100000", "--seed", "1")
    head = subprocess.Popen(["head", "-c", "10"], stdin=proc.stdout, stdout=subprocess.PIPE)
    proc.stdout.close()  # head alone reads it now
    out, _ = head.communicate(timeout=120)
    err = proc.stderr.read()
    proc.wait(timeout=120)
    assert len(out) == 10
    assert proc.returncode == 141 and err == b"", err


def test_greedy_choices_agree(trained, cli, monkeypatch):
    """Temperature 0, top-k 1 and a tiny top-p all take the likeliest token every time."""
    monkeypatch.setenv("AIGC_HOME", str(trained))
    base = ["sample", "run2", "--prompt", "First", "--length", "40", "--json"]
    outs = [json.loads(cli(*base, *extra)[1])["continuations"] for extra in
            (["--temperature", "0", "--seed", "1"], ["--top-k", "1", "--seed", "2"], ["--top-p", "0.0001", "--seed", "3"])]
    assert outs[0] == outs[1] == outs[2]


def test_prompt_from_stdin_and_output_file(trained, cli, monkeypatch, tmp_path):
    import io

    monkeypatch.setenv("AIGC_HOME", str(trained))
    monkeypatch.setattr(sys, "stdin", io.StringIO("First:\n"))
    target = tmp_path / "out" / "text.txt"
    code, out, err = cli("sample", "run1", "--prompt", "-", "--length", "30", "--seed", "2", "-o", target)
    assert code == 0, err
    written = target.read_text(encoding="utf-8")
    assert written.startswith("First:\n") and len(written) == len("First:\n") + 30 + 1


def test_kv_cache_and_rnn_state_match_full_forward():
    """Each cached or carried step gives the logits a full forward gives at that position, and
    generation with the cache past the context (the re-read of its last half) stays linear and sane."""
    from aigc_cli.models.text.nets import GPT, RNNLM
    from aigc_cli.models.text.sampling import Stepper, generate

    torch.manual_seed(0)
    gpt = GPT(11, 16, 2, 2, 12, 0.0).eval()
    ids = torch.randint(0, 11, (3, 12))
    full = gpt(ids)  # (3, 12, 11)
    stepper = Stepper(gpt)
    got = [stepper.start(ids[:, :4])] + [stepper.step(ids[:, i]) for i in range(4, 12)]
    torch.testing.assert_close(torch.stack(got, 1), full[:, 3:], rtol=1e-4, atol=1e-5)
    for arch in ("gru", "lstm"):
        rnn = RNNLM(11, 16, 2, arch, 0.0).eval()
        full = rnn(ids)[0]
        stepper = Stepper(rnn)
        got = [stepper.start(ids[:, :1])] + [stepper.step(ids[:, i]) for i in range(1, 12)]
        torch.testing.assert_close(torch.stack(got, 1), full, rtol=1e-4, atol=1e-5)
    # Greedy: with and without the cache, the same tokens while the context is not full.
    g = torch.Generator()
    cached = generate(gpt, ids[0, :3], 1, 9, g, temperature=0)
    plain = generate(gpt, ids[0, :3], 1, 9, g, temperature=0, cache=False)
    assert torch.equal(cached, plain)
    long = generate(gpt, ids[0, :3], 2, 100, g.manual_seed(1))  # 8 re-reads of the cache's last half
    assert long.shape == (2, 100) and int(long.max()) < 11


@pytest.mark.slow  # each: three text trainings, each in a process (16-26 s)
@pytest.mark.parametrize("arch", ["gpt", "gru"])
def test_resume_after_ctrl_c_is_bit_identical(corpus, arch, resumes_bit_identically):
    """SIGINT inside step 50 (epoch 2), --resume: the weights equal those of a run never stopped
    (dropout on: the random state is part of the checkpoint)."""
    args = ["-q", "train", "text", "--dataset", corpus, *TINY, "--epochs", "2", "--dropout", "0.1", "--arch", arch]
    resumes_bit_identically(args, 50, ["-q", "train", "text", "--resume", "run1"], drop=("tokens_per_s",))


def test_byte_tokenizer_trains_on_any_text_and_streams_utf8(tmp_path, cli, monkeypatch):
    monkeypatch.setenv("AIGC_HOME", str(tmp_path / "home"))
    path = tmp_path / "poly.txt"
    path.write_text("Grüße aus Köln! 日本語のテキスト。 café naïve\n" * 300, encoding="utf-8")
    code, out, err = cli("-q", "train", "text", "--dataset", path, "--tokenizer", "byte", *TINY, "--epochs", "2")
    assert code == 0, err
    config = json.loads((tmp_path / "home/runs/run1/config.json").read_text())
    assert config["model"]["vocab_size"] == 256 and config["model"]["alphabet"] is None
    code, out, err = cli("sample", "run1", "--prompt", "日本", "--length", "120", "--seed", "3")
    assert code == 0, err
    text = out.decode("utf-8")  # valid UTF-8 however the bytes were split while streaming
    assert text.startswith("日本")


def test_folder_corpus_and_its_errors(tmp_path, cli, monkeypatch, clean_error):
    from aigc_cli.data.text import load_corpus

    folder = tmp_path / "notes"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha " * 100, encoding="utf-8")
    (folder / "sub" / "b.txt").write_text("beta " * 100, encoding="utf-8")
    (folder / "ignored.md").write_text("zzz", encoding="utf-8")
    corpus = load_corpus(str(folder))
    assert corpus.files == 2 and "z" not in corpus.alphabet
    assert len(corpus.text) + len(corpus.held_out) == 600 + 500 + 2 + 1  # joined by a blank line
    monkeypatch.setenv("AIGC_HOME", str(tmp_path / "home"))
    (folder / "bad.txt").write_bytes(b"caf\xe9 latin-1\n")
    clean_error(*cli("train", "text", "--dataset", folder, *TINY)[::2], "bad.txt is not UTF-8", "iconv")
    assert not (tmp_path / "home" / "runs").exists() or not list((tmp_path / "home" / "runs").glob("run*"))


def test_bad_inputs_are_one_line_errors(trained, corpus, cli, monkeypatch, clean_error, tmp_path, make_bars):
    monkeypatch.setenv("AIGC_HOME", str(trained))
    check = lambda *args, words: clean_error(*cli(*args)[::2], *words)  # noqa: E731
    check("sample", "run1", "--prompt", "§§", words=["never saw", "'§'", "--tokenizer byte"])
    check("sample", "run1", "--latents", tmp_path / "z.npy", words=["--latents does not apply", "text run"])
    check("sample", "run1", "--truncation", "0.5", words=["--truncation does not apply to run1"])
    check("sample", "run1", "--top-p", "1.5", words=["--top-p must be in (0, 1]"])
    code, out, err = cli("sample", "run1", "--prompt", "ROMEO:", "--top-p", "2")
    clean_error(code, err, "--top-p must be in (0, 1], got 2")
    assert out == b""  # refused before the prompt was streamed to stdout
    check("interpolate", "run1", "--from-seed", "1", "--to-seed", "2", "-o", tmp_path / "i.png",
          words=["'aigc interpolate' does not apply to run1, a text run", "aigc sample, aigc eval ppl"])
    check("reconstruct", "run1", corpus, "-o", tmp_path / "r.png", words=["'aigc reconstruct' does not apply"])
    check("train", "text", "--dataset", corpus, *TINY, "--context", "20000", words=["too few for --context 20000"])
    check("train", "text", "--dataset", corpus, *TINY, "--ema-decay", "1.5",
          words=["--ema-decay must be in [0, 1), got 1.5"])
    check("train", "text", "--dataset", corpus, *TINY, "--dropout", "1", words=["--dropout must be in [0, 1), got 1"])
    check("train", "text", "--dataset", corpus, *TINY, "--arch", "gpt", "--width", "10", "--heads", "4",
          words=["--width 10 must be a multiple of --heads 4"])
    check("train", "text", "--dataset", "digits", words=["no text corpus 'digits'", "bard"])
    check("train", "text", "--dataset", tmp_path / "nowhere.txt", words=["no such file"])
    # An image run refuses the text options, and wants -o.
    data = make_bars(tmp_path / "bars.npz", n=32)
    assert cli("-q", "train", "gan", "--dataset", data, "--arch", "mlp", "--width", "4", "--latent-dim", "4",
               "--batch-size", "16", "--epochs", "1")[0] == 0
    check("sample", "run3", "--temperature", "0.5", "-o", tmp_path / "g.png",
          words=["--temperature does not apply to run3, a gan run", "text runs"])
    check("sample", "run3", words=["give -o grid.png"])
    check("eval", "ppl", "run3", corpus, words=["'aigc eval ppl' does not apply to run3"])


@pytest.fixture
def shakespeare_mirror(tmp_path, monkeypatch, aigc_home):
    """A local server standing in for the corpus' host, serving a small input.txt."""
    from aigc_cli.data import text

    body = ("First Citizen:\nBefore we proceed any further, hear me speak.\n\n" * 50).encode()
    root = tmp_path / "www" / "shakespeare"
    root.mkdir(parents=True)
    (root / "input.txt").write_bytes(body)
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root.parent)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("AIGC_DATASET_MIRROR", f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setattr(text, "SHAKESPEARE", {"input.txt": hashlib.md5(body).hexdigest()})
    yield body, requests
    server.shutdown()
    server.server_close()


def test_named_corpus_downloads_once_checksummed(shakespeare_mirror, aigc_home, monkeypatch):
    from aigc_cli.data import text
    from aigc_cli.core.errors import DatasetError

    body, requests = shakespeare_mirror
    corpus = text.load_corpus("shakespeare")
    assert corpus.text + corpus.held_out == body.decode() and requests == ["/shakespeare/input.txt"]
    assert text.load_corpus("shakespeare", "test").text == corpus.held_out
    assert len(requests) == 1  # cached: no second download
    assert text.corpus_status("shakespeare") == "downloaded"
    (aigc_home / "cache" / "datasets" / "shakespeare" / "input.txt").unlink()
    monkeypatch.setattr(text, "SHAKESPEARE", {"input.txt": "0" * 32})
    with pytest.raises(DatasetError, match="checksum mismatch"):
        text.load_corpus("shakespeare")
    assert not (aigc_home / "cache" / "datasets" / "shakespeare" / "input.txt").exists()


def test_the_built_in_corpus_needs_no_network(monkeypatch):
    from aigc_cli.data.text import load_corpus

    monkeypatch.setenv("AIGC_DATASET_MIRROR", "http://127.0.0.1:9/")  # would fail if used
    train, test = load_corpus("bard"), load_corpus("bard", "test")
    assert train.text.startswith("First Citizen:") and train.held_out == test.text
    assert len(train.text) == int(0.9 * (len(train.text) + len(test.text)))


def test_datasets_commands_show_corpora(cli, corpus, clean_error, tmp_path):
    code, out, err = cli("datasets", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["bard"]["kind"] == "text" and rows["bard"]["status"] == "built-in"
    assert rows["shakespeare"]["kind"] == "text" and rows["mnist"]["kind"] == "images"
    code, out, err = cli("datasets", "info", corpus, "--json")
    info = json.loads(out)
    assert code == 0 and info["size"] == 18_000 and info["held_out"] == 2_000 and "\n" in info["alphabet"]
    (tmp_path / "tiny.txt").write_text("a", encoding="utf-8")
    clean_error(*cli("datasets", "info", tmp_path / "tiny.txt")[::2], "too short to split")
