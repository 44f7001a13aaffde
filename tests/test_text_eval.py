"""``aigc eval ppl``: bits per character, bits per token and perplexity of a text run on a text
file (aigc_cli/metrics/text.py, docs/eval.md#ppl).

Two tiny runs in one store, trained once for the module (a few seconds): a char GPT on the
built-in corpus and a byte GPT on a short file with non-ASCII characters; plus a tiny GAN for the
image-run error.
"""

import io
import json
import math
import shutil
import sys

import pytest
import torch

pytestmark = pytest.mark.usefixtures("one_torch_thread")

TINY = dict(epochs=1, layers=1, width=16, heads=2, context=16, batch_size=64, seed=1)
ACCENTED = "Ça coûte cher, naïve café — 東京 ok!\n"  # 1-, 2- and 3-byte characters


@pytest.fixture(scope="module")
def store(tmp_path_factory, one_torch_thread, make_bars):
    """(home, files): run1 char GPT on bard, run2 byte GPT, run3 a GAN; held-out text files."""
    from aigc_cli.data.text import load_corpus
    from aigc_cli.training import train

    home = tmp_path_factory.mktemp("home")
    files = tmp_path_factory.mktemp("files")
    bard = load_corpus("bard")
    (files / "held.txt").write_text(bard.held_out[:3000], encoding="utf-8")
    mixed = "".join(bard.text[i : i + 200] + ACCENTED for i in range(0, 4000, 200))
    (files / "mixed.txt").write_text(mixed, encoding="utf-8")
    (files / "mixed_test.txt").write_text(ACCENTED * 3 + bard.held_out[:300], encoding="utf-8")
    make_bars(files / "bars.npz", n=32)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_HOME", str(home))
        assert train("text", "bard", **TINY).id == "run1"
        assert train("text", str(files / "mixed.txt"), tokenizer="byte", **TINY).id == "run2"
        assert train("gan", str(files / "bars.npz"), arch="mlp", width=4, latent_dim=4, batch_size=16,
                     epochs=1).id == "run3"
    return home, files


@pytest.fixture
def home(store, monkeypatch):
    monkeypatch.setenv("AIGC_HOME", str(store[0]))
    return store[0]


@pytest.fixture
def files(store):
    return store[1]


def _ppl_json(cli, *args):
    code, out, err = cli("eval", "ppl", *args, "--json")
    assert code == 0, err
    return json.loads(out)


def _direct(home, run, text):
    """The loss of ``run`` on ``text`` recomputed here with plain torch: (total nats, tokens scored).
    Windows of ``context`` inputs starting every ``context`` tokens, each scored from its start."""
    from safetensors.torch import load_file

    from aigc_cli.models.text.family import build_model

    config = json.loads((home / "runs" / run / "config.json").read_text())["model"]
    model = build_model(config)
    state = {k[len("model."):]: v for k, v in load_file(home / "runs" / run / "model.safetensors").items()}
    model.load_state_dict(state)
    return _score(model.eval(), config, text)


def _score(model, config, text):
    if config["tokenizer"] == "char":
        index = {c: i for i, c in enumerate(config["alphabet"])}
        ids = [index[c] for c in text]
    else:
        ids = list(text.encode("utf-8"))
    ids, t = torch.tensor(ids), config["context"]
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(ids) - 1, t):
            chunk = ids[start : start + t + 1]
            out = model(chunk[None, :-1])
            logits = (out[0] if isinstance(out, tuple) else out)[0].double()  # (T, V)
            logp = logits.log_softmax(-1)
            total -= float(logp[torch.arange(len(chunk) - 1), chunk[1:]].sum())
            count += len(chunk) - 1
    return total, count


def test_json_fields_and_their_relations(home, files, cli):
    result = _ppl_json(cli, "run1", files / "held.txt")
    text = (files / "held.txt").read_text(encoding="utf-8")
    assert {"run", "file", "tokens", "characters", "nats_per_token", "bits_per_token", "bits_per_char",
            "perplexity", "tokenizer", "context", "seconds"} <= set(result)
    assert result["run"] == "run1" and result["file"] == str(files / "held.txt")
    assert result["tokenizer"] == "char" and result["context"] == 16 and result["seconds"] >= 0
    # Every character but the first is scored, one token each.
    assert result["tokens"] == result["characters"] == len(text) - 1
    nats = result["nats_per_token"]
    assert result["bits_per_token"] == pytest.approx(nats / math.log(2), rel=1e-12)
    assert result["perplexity"] == pytest.approx(math.exp(nats), rel=1e-12)
    assert result["bits_per_char"] == pytest.approx(nats * result["tokens"] / math.log(2) / result["characters"])
    assert result["bits_per_char"] == pytest.approx(result["bits_per_token"])  # char tokens


@pytest.mark.parametrize("run, name", [("run1", "held.txt"), ("run2", "mixed_test.txt")])
def test_equals_a_direct_computation(home, files, cli, run, name):
    text = (files / name).read_text(encoding="utf-8")
    result = _ppl_json(cli, run, files / name)
    total, count = _direct(home, run, text)
    assert result["tokens"] == count
    assert result["nats_per_token"] == pytest.approx(total / count, rel=1e-5)
    assert result["bits_per_char"] == pytest.approx(total / math.log(2) / (len(text) - 1), rel=1e-5)


def test_byte_runs_count_characters_not_bytes(home, files, cli):
    text = (files / "mixed_test.txt").read_text(encoding="utf-8")
    result = _ppl_json(cli, "run2", files / "mixed_test.txt")
    assert result["tokenizer"] == "byte"
    assert result["tokens"] == len(text.encode("utf-8")) - 1 > result["characters"] == len(text) - 1
    bits = result["bits_per_token"] * result["tokens"]
    assert result["bits_per_char"] == pytest.approx(bits / result["characters"])
    assert result["bits_per_char"] > result["bits_per_token"]  # more than one byte a character


def test_a_trained_model_beats_guessing_and_its_untrained_self(home, files, cli):
    from aigc_cli.models.text.family import build_model

    text = (files / "held.txt").read_text(encoding="utf-8")
    result = _ppl_json(cli, "run1", files / "held.txt")
    config = json.loads((home / "runs/run1/config.json").read_text())["model"]
    assert result["bits_per_char"] < math.log2(config["vocab_size"]) - 0.5, result
    torch.manual_seed(0)
    untrained_total, count = _score(build_model(config).eval(), config, text)
    assert result["nats_per_token"] < untrained_total / count - 0.5


def test_python_api_and_stdin_agree_with_the_file(home, files, cli, monkeypatch):
    from aigc_cli.metrics.text import perplexity

    path = files / "held.txt"
    by_file = _ppl_json(cli, "run1", path)
    by_api = perplexity("run1", path)
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(path.read_bytes()), encoding="utf-8"))
    by_stdin = _ppl_json(cli, "run1", "-")
    assert by_stdin["file"] == "-"
    for other in (by_api, by_stdin):
        for key in ("tokens", "characters", "nats_per_token", "bits_per_char", "perplexity"):
            assert other[key] == pytest.approx(by_file[key], rel=1e-9), key


def test_scoring_reports_its_progress(home, files):
    """A large file takes a while: ``perplexity`` reports each batch of windows it scored (the
    CLI draws it as a bar on a terminal), and the result is the same with or without it."""
    from aigc_cli.metrics.text import perplexity

    calls = []
    with_progress = perplexity("run1", files / "held.txt", progress=lambda done, total: calls.append((done, total)))
    total = -(-((3000 - 1) // 16) // 64)  # windows of the 16-token context, 64 to a batch
    assert calls == [(i, total) for i in range(1, total + 1)] and total > 1
    assert with_progress["bits"] == perplexity("run1", files / "held.txt")["bits"]


def test_human_output_is_one_line_on_stdout(home, files, cli):
    code, out, err = cli("eval", "ppl", "run1", files / "held.txt")
    assert code == 0, err
    line = out.decode().strip()
    assert len(line.splitlines()) == 1 and line.startswith("bits_per_char ") and "perplexity " in line
    assert "run1" in err and "tokens" in err  # the table goes to stderr
    code, out, err = cli("-q", "eval", "ppl", "run1", files / "held.txt")
    assert code == 0 and err == "" and out.decode().startswith("bits_per_char ")


def test_errors_are_one_line(home, files, cli, clean_error, tmp_path, monkeypatch):
    check = lambda *args, words: clean_error(*cli("eval", "ppl", *args)[::2], *words)  # noqa: E731
    check("run3", files / "held.txt", words=["'aigc eval ppl' does not apply to run3, a gan", "aigc eval fid"])
    check("run1", tmp_path / "nowhere.txt", words=["no such file", "nowhere.txt"])
    check("run1", tmp_path, words=["is a folder"])
    (tmp_path / "latin1.txt").write_bytes("café crème\n".encode("latin-1"))
    check("run1", tmp_path / "latin1.txt", words=["latin1.txt is not UTF-8", "iconv"])
    (tmp_path / "empty.txt").write_bytes(b"")
    check("run1", tmp_path / "empty.txt", words=["nothing to score"])
    (tmp_path / "one.txt").write_text("A", encoding="utf-8")
    check("run1", tmp_path / "one.txt", words=["nothing to score"])
    (tmp_path / "alien.txt").write_text("First §§ and ¤\n", encoding="utf-8")
    check("run1", tmp_path / "alien.txt", words=["alien.txt has 2 character(s) this run never saw", "'§'",
                                                 "--tokenizer byte"])
    check("run9", files / "held.txt", words=["no run 'run9'"])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9\n")))
    check("run1", "-", words=["standard input is not UTF-8"])
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"")))
    check("run1", "-", words=["standard input", "nothing to score"])
    # A byte run scores any UTF-8 text, characters the corpus never had included.
    assert _ppl_json(cli, "run2", tmp_path / "alien.txt")["characters"] == len("First §§ and ¤\n") - 1


def test_a_run_without_weights(store, cli, clean_error, tmp_path, monkeypatch):
    # Added to a copy of the module's store, never to the store itself.
    shutil.copytree(store[0], tmp_path / "home")
    monkeypatch.setenv("AIGC_HOME", str(tmp_path / "home"))
    runs = tmp_path / "home" / "runs"
    shutil.copytree(runs / "run1", runs / "run7")
    (runs / "run7" / "model.safetensors").unlink()
    clean_error(*cli("eval", "ppl", "run7", store[1] / "held.txt")[::2], "run7 has no weights")


def test_text_runs_refuse_the_image_metrics(home, cli, clean_error):
    clean_error(*cli("eval", "fid", "run1", "run1")[::2], "'aigc eval fid' does not apply to run1, a text run",
                "aigc eval ppl")
