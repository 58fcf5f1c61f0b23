"""facebatch.pipeline.textfiles: small user text files are read with bounds, and YAML keys are given once."""

from __future__ import annotations

import contextlib
import os
import signal
import socket

import pytest

from facebatch.errors import InputError
from facebatch.pipeline.textfiles import MAX_TEXT_BYTES, load_yaml, read_small_text


@contextlib.contextmanager
def deadline(seconds: float):
    """Fail instead of hanging when a read blocks (what a FIFO did)."""

    def expired(*_):
        raise TimeoutError(f"still blocked after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def special_files(tmp_path) -> dict[str, tuple[object, str]]:
    """name -> (path, what the one-line error says): none of them may be read, and none may block."""
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    big = tmp_path / "big.yaml"
    with open(big, "wb") as fh:
        fh.truncate(MAX_TEXT_BYTES + 1)  # sparse: no disk used
    (tmp_path / "folder.yaml").mkdir()
    sock = tmp_path / "sock.yaml"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(sock))  # the socket file stays when it is closed
    (tmp_path / "latin1.yaml").write_bytes("Sm\xefling: [a, b]\n".encode("latin-1"))
    return {
        "a FIFO": (fifo, "is a FIFO, not a regular file"),
        "/dev/zero": ("/dev/zero", "is a character device, not a regular file"),
        "a folder": (tmp_path / "folder.yaml", "is a folder, not a regular file"),
        "a socket": (sock, "is a socket, not a regular file"),
        "too big": (big, "larger than 1024 KiB"),
        "missing": (tmp_path / "missing.yaml", "cannot read it (No such file or directory)"),
        "not UTF-8": (tmp_path / "latin1.yaml", "not UTF-8 text"),
    }


def test_only_a_small_regular_file_is_read_and_nothing_blocks(tmp_path):
    for case, (path, message) in special_files(tmp_path).items():
        with deadline(10), pytest.raises(InputError) as info:
            read_small_text(path, "--prompts")
        text = str(info.value)
        assert text.startswith(f"--prompts {path}") and message in text and "\n" not in text, (case, text)
    (tmp_path / "ok.yaml").write_text("\ufeffSmiling: [a, b]\n")
    assert read_small_text(tmp_path / "ok.yaml", "--prompts") == "Smiling: [a, b]\n"
    link = tmp_path / "link.yaml"
    link.symlink_to(tmp_path / "ok.yaml")  # a link to a regular file is that file
    assert read_small_text(link, "--prompts") == "Smiling: [a, b]\n"


@pytest.mark.parametrize(
    "text, key, where",
    [
        ("Smiling: [a, b]\nMale: [c, d]\nSmiling: [e, f]\n", "'Smiling'", "lines 1 and 3"),
        ("{Smiling: [a, b], Smiling: [c, d]}", "'Smiling'", "line 1"),
        ("outer:\n  steps: 1\n  steps: 2\n", "'steps'", "lines 2 and 3"),
        ("yes: [a, b]\ntrue: [c, d]\n", "True", "lines 1 and 2"),  # YAML reads both as the boolean
        ("1: a\n0x1: b\n", "1", "lines 1 and 2"),
    ],
)
def test_a_yaml_key_given_twice_is_refused_naming_it(text, key, where):
    with pytest.raises(InputError) as info:
        load_yaml(text, "--prompts p.yaml")
    message = str(info.value)
    assert message.startswith("--prompts p.yaml: ") and f"{key} is given twice ({where})" in message, message
    assert "\n" not in message


def test_yaml_that_names_each_key_once_loads_as_safe_load_does():
    assert load_yaml("a: 1\nb: {a: 2}\nc: [{a: 3}, {a: 4}]\n", "f") == {
        "a": 1,
        "b": {"a": 2},
        "c": [{"a": 3}, {"a": 4}],
    }
    assert load_yaml("base: &b {a: 1, b: 2}\nx: {<<: *b, a: 3}\n", "f")["x"] == {"a": 3, "b": 2}  # a merge overrides
    assert load_yaml("1: a\n'1': b\n", "f") == {1: "a", "1": "b"}
    assert load_yaml("", "f") is None
    for bad in ("a: [1\n", "!!python/object/apply:os.system [ls]", "a: b: c"):
        with pytest.raises(InputError, match=r"^f is not valid YAML: .*\(line \d+, column \d+\)$"):
            load_yaml(bad, "f")
