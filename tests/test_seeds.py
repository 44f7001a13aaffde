"""Seeds given to the commands that generate: whole numbers in [0, 2**32 - 1], checked before
anything is loaded or written, each refused in one line naming its own flag."""

import pytest

BIG = str(2**70)


@pytest.fixture
def gan_run(aigc_home, tiny_npz, tiny_gan, cli):
    assert cli("-q", "train", "gan", "--dataset", tiny_npz, *tiny_gan, "--epochs", "1")[0] == 0
    return "run1"


@pytest.mark.parametrize("args, flag", [
    (["sample", "run1", "--seed", BIG, "-o", "-"], "--seed"),
    (["sample", "run1", "--seed", "-1", "-o", "-"], "--seed"),
    (["interpolate", "run1", "--from-seed", BIG, "-o", "-"], "--from-seed"),
    (["interpolate", "run1", "--from-seed", "1", "--to-seed", "-3", "-o", "-"], "--to-seed"),
    (["eval", "kid", "run1", "RUN", "--seed", BIG, "-n", "4"], "--seed"),
    (["eval", "kid", "run1", "run1", "--kid-seed", BIG, "-n", "4"], "--kid-seed"),
    (["eval", "is", "run1", "--is-seed", BIG, "-n", "4"], "--is-seed"),
])
def test_a_seed_out_of_range_is_one_line_naming_its_flag(gan_run, cli, clean_error, args, flag):
    code, out, err = cli(*args)
    clean_error(code, err, f"{flag} must be", "4294967295")
    assert out == b""
