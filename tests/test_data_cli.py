import json

import numpy as np
import pytest


def test_list_json(cli, aigc_home):
    code, out, _ = cli("datasets", "list", "--json")
    rows = {r["name"]: r for r in json.loads(out)}
    assert code == 0
    assert rows["shapes"]["status"] == "built-in"
    assert rows["mnist"]["status"] == "not downloaded" and rows["cifar10"]["description"]


def test_list_table(cli, aigc_home):
    code, out, err = cli("datasets", "list")
    assert code == 0 and err == "" and "fashion-mnist" in out.decode()  # the result: on stdout


def test_info_json_and_table(cli, tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((5, 8, 8, 3), np.uint8), y=np.array([0, 1, 2, 1, 0]))
    code, out, _ = cli("datasets", "info", str(tmp_path / "d.npz"), "--json")
    info = json.loads(out)
    assert code == 0
    assert info["size"] == 5 and info["shape"] == [3, 8, 8] and info["channels"] == 3
    assert info["classes"] == 3 and info["skipped"] == 0 and len(info["fingerprint"]) == 64
    code, out, err = cli("datasets", "info", str(tmp_path / "d.npz"), "--split", "test")
    assert code == 0 and info["fingerprint"][:16] in out.decode() and err == ""  # the table is the result


@pytest.mark.parametrize(
    "args, message",
    [
        (["datasets", "info", "/no/such/place"], "no dataset"),
        (["datasets", "info", "shapes", "--split", "val"], "unknown split"),
    ],
)
def test_errors_are_one_line(cli, args, message):
    code, out, err = cli(*args)
    assert code == 1 and out == b""
    assert err.startswith("aigc: error: ") and message in err and err.count("\n") == 1


def test_subprocess_not_a_dataset(tmp_path, run_aigc):
    (tmp_path / "notes.dat").write_text("hello")  # (a .txt file is a text corpus: tests/test_text.py)
    p = run_aigc(tmp_path / "home", "datasets", "info", tmp_path / "notes.dat", timeout=60)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.startswith("aigc: error: not a dataset") and "Traceback" not in p.stderr
