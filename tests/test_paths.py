"""What each kind of path gets (issue 27, docs/reliability.md#paths-what-each-kind-gets): one
output function (core/io.py ``check_output``/``write_output``) and one input function
(``check_input``/``open_input``) behind every command.

Outputs: a device is written to and stays a device (``-o /dev/null`` works, ``/dev/full`` is a
one-line "No space left on device"), a FIFO's reader gets the bytes, a socket's listener too, a
symbolic link's target is replaced and the link stays, a folder, a block device or a link loop is
a one-line error, and the target is checked before the work. Inputs: a FIFO, a device, a folder
or a link loop given as a file is refused before it is opened (a FIFO would block the open: a
watcher sees any reader and opens the other end, so a regression fails instead of hanging).
"""

import contextlib
import os
import socket
import stat
import threading
import time

import numpy as np
import pytest
from PIL import Image

needs_root = pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0, reason="mknod needs root")
WAIT_S = 60  # the most a reader thread waits for a command's bytes


@pytest.fixture(scope="module")
def world(tmp_path_factory, cli_captured, make_bars, tiny_gan, tiny_vae):
    """One store with a tiny GAN ("gan"), VAE ("vae") and GRU text run ("text"), and an image."""
    root = tmp_path_factory.mktemp("paths")
    data = make_bars(root / "bars.npz", n=64)
    text = root / "notes.txt"
    text.write_text("to be or not to be, that is the question\n" * 10, encoding="utf-8")
    image = root / "digit.png"
    Image.fromarray(np.tile(np.arange(8, dtype=np.uint8) * 30, (8, 1))).save(image)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIGC_HOME", str(root / "home"))
        for args in (["gan", "--dataset", data, *tiny_gan, "--name", "gan"],
                     ["vae", "--dataset", data, *tiny_vae["args"], "--name", "vae"],
                     ["text", "--dataset", text, "--arch", "gru", "--width", "8", "--context", "8",
                      "--batch-size", "16", "--name", "text"]):
            code, _, err = cli_captured("-q", "train", *args, "--epochs", "1")
            assert code == 0, err
    return {"home": root / "home", "image": image, "data": data, "text": text}


@pytest.fixture(scope="module")
def traced():
    return {}  # (graph summary, opset) -> the traced ONNX model (tracing itself is test_export_onnx's)


@pytest.fixture
def home(world, traced, monkeypatch):
    import aigc_cli.export.onnx as onnx_export

    trace = onnx_export.trace_to_onnx

    def once(graph, opset):  # an export here is about where the file goes: trace the model once
        key = (graph.summary, opset)
        if key not in traced:
            traced[key] = trace(graph, opset)
        return traced[key]

    monkeypatch.setattr(onnx_export, "trace_to_onnx", once)
    monkeypatch.setenv("AIGC_HOME", str(world["home"]))
    return world


# Every command that writes a user's file, with TARGET where its output goes, and the magic bytes
# that output starts with.
def writers(world, scratch):
    return {
        "sample": (["sample", "gan", "-n", "4", "--seed", "1", "-o", "TARGET"], b"\x89PNG"),
        "save-latents": (["sample", "gan", "-n", "4", "--seed", "1", "-o", scratch / "grid.png",
                          "--save-latents", "TARGET"], b"\x93NUMPY"),
        "interpolate": (["interpolate", "gan", "--from-seed", "1", "--to-seed", "2", "--frames", "3", "-o", "TARGET"],
                        b"\x89PNG"),
        "reconstruct": (["reconstruct", "vae", world["image"], "-o", "TARGET"], b"\x89PNG"),
        "runs plot": (["runs", "plot", "gan", "-o", "TARGET"], b"\x89PNG"),
        "export": (["export", "onnx", "gan", "-o", "TARGET"], b"\x08"),  # protobuf: field 1 (ir_version)
        "text sample": (["sample", "text", "--seed", "1", "--length", "20", "--prompt", "to", "-o", "TARGET"], b"to"),
    }


COMMANDS = ["sample", "save-latents", "interpolate", "reconstruct", "runs plot", "export", "text sample"]


def command(world, scratch, name, target):
    args, magic = writers(world, scratch)[name]
    return [target if a == "TARGET" else a for a in args], magic


def mknod(path, kind, major, minor):
    try:
        os.mknod(path, kind | 0o666, os.makedev(major, minor))
    except PermissionError:
        pytest.skip("no CAP_MKNOD here")
    return os.stat(path).st_rdev


def leftovers(folder, *keep):
    """Files in ``folder`` other than ``keep``: temporary files a write left behind, say."""
    return sorted(p.name for p in folder.iterdir() if p.name not in keep)


# -- outputs: devices, FIFOs, sockets --------------------------------------------------------------

@needs_root
@pytest.mark.parametrize("name", COMMANDS)
def test_dev_null_works_and_stays_a_device(home, cli, tmp_path, name):
    null = tmp_path / "null"
    rdev = mknod(null, stat.S_IFCHR, 1, 3)  # /dev/null's numbers, made here: the real one is never at risk
    args, _ = command(home, tmp_path, name, null)
    code, out, err = cli(*args)
    assert code == 0, err
    st = os.lstat(null)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == rdev
    assert leftovers(tmp_path, "null", "grid.png") == []  # no temporary file beside it


@needs_root
@pytest.mark.parametrize("name", COMMANDS)
def test_dev_full_is_a_one_line_error_and_stays_a_device(home, cli, clean_error, tmp_path, name):
    full = tmp_path / "full"
    rdev = mknod(full, stat.S_IFCHR, 1, 7)
    args, _ = command(home, tmp_path, name, full)
    code, out, err = cli(*args)
    clean_error(code, err, f"cannot write {full}: No space left on device")
    st = os.lstat(full)
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == rdev
    assert leftovers(tmp_path, "full", "grid.png") == []


def read_fifo(fifo, run):
    """``run()``'s result and the bytes a reader of ``fifo`` got meanwhile. The test holds the
    FIFO open (read-write: Linux opens that at once) for the whole run, so the reader sees the end
    only when the test lets go: a command that replaced the FIFO instead of writing into it leaves
    the reader with nothing, and the test fails instead of hanging."""
    held = os.open(fifo, os.O_RDWR)
    end = open(fifo, "rb")  # at once: ``held`` is a writer
    got = []

    def reader():
        with end:
            got.append(end.read())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        result = run()
    finally:
        os.close(held)
    thread.join(WAIT_S)
    assert not thread.is_alive()
    return result, got[0]


@pytest.mark.parametrize("name", COMMANDS)
def test_a_fifo_with_a_reader_gets_the_bytes_and_stays_a_fifo(home, cli, tmp_path, name):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    args, magic = command(home, tmp_path, name, fifo)
    (code, out, err), data = read_fifo(fifo, lambda: cli(*args))
    assert code == 0, err
    assert data.startswith(magic) and len(data) > 20
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert leftovers(tmp_path, "pipe", "grid.png") == []


def test_fifo_bytes_equal_a_files(home, cli, tmp_path):
    fifo, file = tmp_path / "pipe", tmp_path / "grid.png"
    os.mkfifo(fifo)
    args, _ = command(home, tmp_path, "sample", fifo)
    (code, _, err), data = read_fifo(fifo, lambda: cli(*args))
    assert code == 0, err
    code, _, err = cli(*command(home, tmp_path, "sample", file)[0])
    assert code == 0, err
    assert data == file.read_bytes()


def test_a_socket_gets_the_bytes(home, cli, tmp_path):
    path = tmp_path / "sock"
    got = []
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(str(path))
        server.listen(1)
        server.settimeout(WAIT_S)

        def serve():
            with contextlib.suppress(OSError), server.accept()[0] as conn:
                got.append(b"".join(iter(lambda: conn.recv(65536), b"")))

        listener = threading.Thread(target=serve, daemon=True)
        listener.start()
        code, _, err = cli(*command(home, tmp_path, "runs plot", path)[0])
        listener.join(WAIT_S)
    assert code == 0, err
    assert got and got[0].startswith(b"\x89PNG")
    assert stat.S_ISSOCK(os.lstat(path).st_mode)


def test_an_open_descriptor_is_written_into(home, cli, tmp_path):
    """`-o /dev/stdout > grid.png` (here /dev/fd/N of a file the test opened): the file gets the
    PNG, as with cp, instead of "use a .png name" or a replaced /proc entry."""
    fd = os.open(tmp_path / "grid.png", os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        code, _, err = cli(*command(home, tmp_path, "sample", f"/dev/fd/{fd}")[0])
    finally:
        os.close(fd)
    assert code == 0, err
    assert (tmp_path / "grid.png").read_bytes().startswith(b"\x89PNG") and leftovers(tmp_path, "grid.png") == []


@needs_root
def test_a_block_device_is_refused_untouched(home, cli, clean_error, tmp_path):
    disk = tmp_path / "disk"
    rdev = mknod(disk, stat.S_IFBLK, 7, 0)  # a loop device's numbers; never opened
    for name in ("sample", "export"):
        code, _, err = cli(*command(home, tmp_path, name, disk)[0])
        clean_error(code, err, "block device")
    assert stat.S_ISBLK(os.lstat(disk).st_mode) and os.lstat(disk).st_rdev == rdev


# -- outputs: links, folders, loops -------------------------------------------------------------------

SUFFIX = {"save-latents": ".npy", "export": ".onnx", "text sample": ".txt"}  # others: .png


@pytest.mark.parametrize("name", COMMANDS)
def test_a_symlink_is_followed_and_stays_a_link(home, cli, tmp_path, name):
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "out.bin"
    target.write_bytes(b"old")
    link = tmp_path / f"link{SUFFIX.get(name, '.png')}"  # the name a command checks is the link's
    link.symlink_to(target)
    args, magic = command(home, tmp_path, name, link)
    code, _, err = cli(*args)
    assert code == 0, err
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_bytes().startswith(magic)
    assert leftovers(tmp_path / "real", "out.bin") == []


def test_a_broken_symlink_gets_its_target_created(home, cli, tmp_path):
    link = tmp_path / "grid.png"
    link.symlink_to(tmp_path / "made.png")
    code, _, err = cli(*command(home, tmp_path, "sample", link)[0])
    assert code == 0, err
    assert link.is_symlink() and (tmp_path / "made.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("name", ["save-latents", "interpolate", "reconstruct", "runs plot", "export", "text sample"])
def test_a_folder_as_output_is_one_line(home, cli, clean_error, tmp_path, name):
    folder = tmp_path / f"folder{SUFFIX.get(name, '.png')}"  # named like a file: only what it is stops the write
    folder.mkdir()
    code, _, err = cli(*command(home, tmp_path, name, folder)[0])
    clean_error(code, err, f"cannot write {folder}: it is a folder")
    assert "Error" not in err and ".tmp" not in err  # no IsADirectoryError, no temporary name
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("name", COMMANDS)
def test_a_symlink_loop_as_output_is_one_line(home, cli, clean_error, tmp_path, name):
    loop = tmp_path / "loop.png"
    loop.symlink_to(tmp_path / "loop2.png")
    (tmp_path / "loop2.png").symlink_to(loop)
    code, _, err = cli(*command(home, tmp_path, name, loop)[0])
    clean_error(code, err, "symbolic link loop")
    assert loop.is_symlink() and (tmp_path / "loop2.png").is_symlink()


def _refuse_work(monkeypatch):
    """The work each command does, made to fail loudly: an error about the target must come first."""
    import aigc_cli.generation as generation

    def work(*args, **kwargs):
        raise AssertionError("the work started before the target was checked")

    monkeypatch.setattr(generation.Generator, "generate", work)
    monkeypatch.setattr(generation.TextGenerator, "generate", work)
    monkeypatch.setattr("aigc_cli.export.onnx.trace_to_onnx", work)
    monkeypatch.setattr("aigc_cli.runs.curves.curves_png", work)


@pytest.mark.parametrize("name", COMMANDS)
def test_the_target_is_checked_before_the_work(home, cli, clean_error, tmp_path, monkeypatch, name):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    _refuse_work(monkeypatch)
    code, _, err = cli(*command(home, tmp_path, name, blocker / "deeper" / "out.png")[0])
    clean_error(code, err, "cannot write", "not a folder")
    assert blocker.read_text() == "not a folder"


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes into read-only folders")
@pytest.mark.parametrize("name", ["sample", "export", "text sample"])
def test_an_unwritable_folder_is_refused_before_the_work(home, cli, clean_error, tmp_path, monkeypatch, name):
    folder = tmp_path / "locked"
    folder.mkdir(mode=0o500)
    _refuse_work(monkeypatch)
    code, _, err = cli(*command(home, tmp_path, name, folder / "out.png")[0])
    clean_error(code, err, "not writable")


def test_eval_outputs_are_checked_before_the_work(home, cli, clean_error, tmp_path):
    folder = tmp_path / "stats.npz"
    folder.mkdir()
    code, _, err = cli("eval", "stats", home["data"], "-o", folder)  # would need Inception weights next
    clean_error(code, err, "it is a folder")
    code, _, err = cli("eval", "fid", home["data"], home["data"], "--save-stats", folder)
    clean_error(code, err, "it is a folder")


# -- outputs: names that promise another format ---------------------------------------------------------

def test_plot_refuses_a_jpeg_name_and_text_refuses_an_image_name(home, cli, clean_error, tmp_path):
    code, _, err = cli("runs", "plot", "gan", "-o", tmp_path / "curves.jpg")
    clean_error(code, err, "runs plot writes PNG", ".png")
    code, _, err = cli(*command(home, tmp_path, "text sample", tmp_path / "a.png")[0])
    clean_error(code, err, "text", ".txt")
    assert leftovers(tmp_path) == []
    code, _, err = cli(*command(home, tmp_path, "text sample", tmp_path / "a.md")[0])
    assert code == 0 and (tmp_path / "a.md").read_text().startswith("to"), err


def test_empty_latents_are_refused(home, cli, clean_error, tmp_path):
    np.save(tmp_path / "z.npy", np.zeros((0, 8), np.float32))
    code, _, err = cli("sample", "gan", "--latents", tmp_path / "z.npy", "-o", tmp_path / "grid.png")
    clean_error(code, err, "no latent vectors", "(0, 8)")
    assert not (tmp_path / "grid.png").exists()


# -- inputs ------------------------------------------------------------------------------------------

@contextlib.contextmanager
def watching(fifo):
    """``opened``: a list that gets True if anything opens ``fifo`` for reading while the block
    runs. Opening a FIFO's write end without blocking works only while it has a reader (one
    blocked in its open included), so the watcher, trying every 50 ms, sees any reader and lets it
    go on at once: a regression fails instead of hanging, however slow the command is."""
    done, opened = threading.Event(), []

    def watch():
        while not done.wait(0.05):
            try:
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:  # ENXIO: nobody reads it
                continue
            os.close(fd)
            opened.append(True)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield opened
    finally:
        done.set()
        watcher.join()


def readers(world, path):
    """Every command that reads a file a user names, reading ``path``."""
    return {
        "sample --latents": ["sample", "gan", "--latents", path, "-o", "-"],
        "interpolate --latents": ["interpolate", "gan", "--latents", path, "-o", "-"],
        "interpolate --between": ["interpolate", "vae", "--between", world["image"], path, "-o", "-"],
        "reconstruct": ["reconstruct", "vae", path, "-o", "-"],
        "eval ppl": ["eval", "ppl", "text", path],
        "datasets info": ["datasets", "info", path],
        "train text": ["train", "text", "--dataset", path, "--epochs", "1"],
        "train gan": ["train", "gan", "--dataset", path, "--epochs", "1"],
    }


READERS = ["sample --latents", "interpolate --latents", "interpolate --between", "reconstruct", "eval ppl",
           "datasets info", "train text", "train gan"]


@pytest.mark.parametrize("name", READERS)
def test_a_fifo_as_input_is_refused_at_once(home, cli, clean_error, tmp_path, name):
    fifo = tmp_path / ("pipe.txt" if name == "train text" else "pipe.npy")
    os.mkfifo(fifo)
    with watching(fifo) as opened:
        code, _, err = cli(*readers(home, fifo)[name])
    assert not opened, f"{name} opened a FIFO"
    clean_error(code, err, str(fifo), "a FIFO")


@pytest.mark.parametrize("name", READERS)
def test_a_symlink_loop_as_input_is_named(home, cli, clean_error, tmp_path, name):
    loop = tmp_path / ("loop.txt" if name == "train text" else "loop.npy")
    loop.symlink_to(tmp_path / "other")
    (tmp_path / "other").symlink_to(loop)
    code, _, err = cli(*readers(home, loop)[name])
    clean_error(code, err, "symbolic link loop")
    assert "no such file" not in err


@pytest.mark.parametrize("name", ["sample --latents", "interpolate --between", "reconstruct", "eval ppl"])
def test_a_device_as_input_file_is_refused(home, cli, clean_error, name):
    code, _, err = cli(*readers(home, "/dev/zero")[name])  # reading it would never end
    clean_error(code, err, "/dev/zero is a character device, not a regular file")


@pytest.mark.parametrize("name", ["sample --latents", "interpolate --latents", "eval ppl"])
def test_a_folder_as_input_file_is_refused(home, cli, clean_error, tmp_path, name):
    code, _, err = cli(*readers(home, tmp_path)[name])
    clean_error(code, err, f"{tmp_path} is a folder; pass")


def test_a_text_folder_says_what_it_skipped(tmp_path):
    from aigc_cli.data.text import load_corpus

    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text("to be or not to be\n" * 20)
    os.mkfifo(folder / "pipe.txt")
    (folder / "loop.txt").symlink_to(folder / "loop.txt")
    with watching(folder / "pipe.txt") as opened:
        corpus = load_corpus(str(folder))
    assert not opened and corpus.files == 1
    assert corpus.skip_summary() == "texts (train): skipped 2 of 3 .txt entries: 1 a FIFO, 1 a symbolic link loop"
    assert corpus.info()["skipped_why"] == {"a FIFO": 1, "a symbolic link loop": 1}


def test_an_eval_folder_counts_a_fifo_as_unreadable(tmp_path):
    from aigc_cli.metrics.features import FolderReader, list_images

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "a.png")
    os.mkfifo(tmp_path / "pipe.png")  # named like an image: listed, never opened
    reader = FolderReader(list_images(tmp_path), workers=1)
    with watching(tmp_path / "pipe.png") as opened:
        batches = list(reader)
    assert not opened
    assert [tuple(b.shape) for b in batches] == [(1, 3, 8, 8)]
    assert reader.skipped_files == [tmp_path / "pipe.png"]


def test_train_text_prints_what_it_skipped(home, cli, tmp_path):
    folder = tmp_path / "texts"
    folder.mkdir()
    (folder / "a.txt").write_text(home["text"].read_text())
    os.mkfifo(folder / "pipe.txt")
    with watching(folder / "pipe.txt") as opened:
        code, out, err = cli("train", "text", "--dataset", folder, "--arch", "gru", "--width", "8", "--context", "8",
                             "--batch-size", "16", "--epochs", "1")
    assert not opened and code == 0, err
    assert "texts (train): skipped 1 of 2 .txt entries: 1 a FIFO" in err


# -- the functions themselves ---------------------------------------------------------------------------

def test_open_input_refuses_what_is_not_a_regular_file(tmp_path):
    from aigc_cli.core.io import PathError, check_input, open_input

    (tmp_path / "f").write_bytes(b"data")
    with open_input(tmp_path / "f", "a file") as f:
        assert f.read() == b"data"
    os.mkfifo(tmp_path / "p")
    (tmp_path / "broken").symlink_to(tmp_path / "gone")
    for path, words in ((tmp_path / "p", "is a FIFO, not a regular file; pass a file"),
                        (tmp_path, "is a folder; pass a file"),
                        (tmp_path / "broken", "is a broken symbolic link (to "),
                        (tmp_path / "nope", "no such file: "),
                        (tmp_path / "f" / "under", "no such file: ")):
        with pytest.raises(PathError, match=words.replace("(", r"\(")):
            open_input(path, "a file")
    assert check_input(tmp_path, "a folder", folder=True).st_mode & stat.S_IFDIR


def test_write_output_regular_files_stay_atomic(tmp_path):
    from aigc_cli.core.io import write_output

    target = tmp_path / "new" / "deeper" / "out.bin"  # missing folders are made
    out = write_output(target, b"one")
    assert out.path == target and not out.stream and target.read_bytes() == b"one"
    write_output(target, lambda f: f.write(b"two"))  # a writer function, as np.save wants
    assert target.read_bytes() == b"two" and leftovers(target.parent, "out.bin") == []
    def fails(f):
        f.write(b"half")
        raise RuntimeError("the writer failed")

    with pytest.raises(RuntimeError):  # a writer that fails leaves the old file and no temporary
        write_output(target, fails)
    assert target.read_bytes() == b"two" and leftovers(target.parent, "out.bin") == []


def test_write_output_to_a_fifo_whose_reader_left(tmp_path):
    from aigc_cli.core.io import PathError, write_output

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)

    def reader():
        with open(fifo, "rb") as f:
            f.read(1)  # then gone, before the end

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    def write(f):
        for _ in range(64):  # 4 MiB, far more than a pipe holds
            f.write(b"x" * 65536)
            f.flush()
            time.sleep(0.01)

    with pytest.raises(PathError, match="its reader closed it before the end"):
        write_output(fifo, write)
    thread.join(WAIT_S)
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)



def test_a_name_ending_in_a_slash_is_a_folder(home, cli, clean_error, tmp_path):
    code, _, err = cli(*command(home, tmp_path, "runs plot", f"{tmp_path}/new/")[0])
    clean_error(code, err, "a name ending in / is a folder", "curves.png")
    assert leftovers(tmp_path) == []  # no file called "new"


def test_save_stats_streams_into_a_fifo(tmp_path):
    from aigc_cli.metrics.stats import Stats, load_stats, save_stats

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    stats = Stats(np.arange(3.0), np.eye(3), 10)
    _, data = read_fifo(fifo, lambda: save_stats(fifo, stats))
    (tmp_path / "copy.npz").write_bytes(data)
    back = load_stats(tmp_path / "copy.npz")
    assert np.array_equal(back.mu, stats.mu) and np.array_equal(back.sigma, stats.sigma) and back.n == 10
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
