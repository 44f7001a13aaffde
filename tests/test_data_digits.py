"""The built-in digits: the MNIST test set shipped in the package, usable with no network."""

import hashlib
import re

import torch

from aigc_cli.data import load_dataset
from aigc_cli.data.digits import files


def test_the_shipped_files_are_the_ones_the_licence_names():
    images, labels = files()
    text = (images.parent / "LICENSE.md").read_text()
    assert "CC BY-SA 3.0" in text and "LeCun" in text
    for path in (images, labels):
        md5 = re.search(rf"{path.name} \| ([0-9a-f]{{32}})", text).group(1)
        assert hashlib.md5(path.read_bytes()).hexdigest() == md5


def test_splits_are_disjoint_and_labelled():
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert (len(train), len(test)) == (8000, 2000)
    assert train.images.shape[1:] == (1, 28, 28) and train.images.dtype == torch.uint8
    assert train.info()["classes"] == 10 and train.info()["class_names"] == [str(d) for d in range(10)]
    assert sorted(torch.bincount(test.labels).tolist())[0] > 150  # every digit in both splits
    assert sorted(torch.bincount(train.labels).tolist())[0] > 600
    assert train.fingerprint != test.fingerprint
    assert not torch.equal(train.images[:5], test.images[:5])


def test_bad_split_is_one_line(aigc_home, cli, clean_error):
    code, _, err = cli("datasets", "info", "digits", "--split", "valid")
    clean_error(code, err, "unknown split 'valid'", "train, test")


def test_a_conditional_gan_trains_on_the_digits(aigc_home, cli, tiny_gan):
    code, out, err = cli("train", "gan", "--dataset", "digits", *tiny_gan, "--time", "3s", "--json")
    assert code == 0, err
    config = (aigc_home / "runs/run1/config.json").read_text()
    assert '"spec": "digits"' in config and '"conditional": true' in config
