"""Errors from the OS and the network end as one line and exit 2, never a traceback.

Roots: the CLI's one error wrapper turns any OSError into one line (with the resume hint on a full disk);
`cluster._connect` bounds the whole scheduler handshake and names a malformed URL or scheduler file;
special files are described as what they are (images.read_bytes, labels, checkpoints).
"""

from __future__ import annotations

import errno
import os
import socket
import threading
import time

import pytest
from typer.testing import CliRunner

from facebatch.cli.app import app
from facebatch.pipeline import cluster

runner = CliRunner()


def one_line(res, code=2):
    assert res.exit_code == code, res.output
    assert res.output.count("\n") == 1 and res.output.startswith("error:"), res.output
    return res.output


def test_out_below_a_file_is_one_line(tmp_path, fixture_generator_path):
    (tmp_path / "file.txt").write_text("x")
    res = runner.invoke(app, ["sample", "-g", str(fixture_generator_path), "-o", str(tmp_path / "file.txt" / "o")])
    assert "Not a directory" in one_line(res)


def test_a_full_disk_says_so_and_how_to_resume(tmp_path, fixture_generator_path, monkeypatch):
    from facebatch.pipeline import runner as runner_mod

    def full(path, obj):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(runner_mod, "atomic_write_json", full)
    res = runner.invoke(app, ["sample", "-g", str(fixture_generator_path), "-o", str(tmp_path / "o"), "-n", "1"])
    assert "disk is full" in one_line(res) and "rerun the same command" in res.output


def test_permission_denied_is_one_line(tmp_path, fixture_generator_path, monkeypatch):
    from facebatch.pipeline import rundir

    def denied(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self.root))

    monkeypatch.setattr(rundir.RunDir, "lock", denied)
    res = runner.invoke(app, ["sample", "-g", str(fixture_generator_path), "-o", str(tmp_path / "o"), "-n", "1"])
    assert "Permission denied" in one_line(res)


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_special_files_as_checkpoint_or_labels_are_described(tmp_path, kind):
    path = tmp_path / "x.pt"
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path = "/dev/null"
    res = runner.invoke(app, ["sample", "-g", str(path), "-o", str(tmp_path / "o"), "-n", "1"])
    assert ("a FIFO" if kind == "fifo" else "a character device") in one_line(res)
    res = runner.invoke(app, ["fit-boundaries", str(path), "-l", str(tmp_path), "-o", str(tmp_path / "b.json")])
    assert "not a regular file" in one_line(res)


def _server(reply: bytes | None):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    held = []

    def serve():
        while True:
            try:
                conn, _ = sock.accept()
            except OSError:
                return
            held.append(conn)
            if reply:
                conn.sendall(reply)

    threading.Thread(target=serve, daemon=True).start()
    return sock, f"tcp://127.0.0.1:{sock.getsockname()[1]}"


@pytest.mark.parametrize("reply", [None, b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi" * 50, b"\xff" * 64])
def test_an_address_that_is_not_a_dask_scheduler_ends_in_bounded_time(tmp_path, monkeypatch, reply):
    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 3)
    sock, address = _server(reply)
    try:
        started = time.perf_counter()
        with pytest.raises(Exception) as info:
            with cluster.open_client(cluster.ClusterOptions(scheduler=address)):
                pass
        assert time.perf_counter() - started < 15
        assert type(info.value).__name__ == "InputError", info.value
    finally:
        sock.close()


@pytest.mark.parametrize("address", ["foo://bar", "tcp://127.0.0.1:notaport", "tcp://[::1"])
def test_a_malformed_scheduler_url_is_one_error(monkeypatch, address):
    from facebatch.errors import InputError

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 3)
    with pytest.raises(InputError):
        with cluster.open_client(cluster.ClusterOptions(scheduler=address)):
            pass


@pytest.mark.parametrize("content", ["{", "{}", "[1, 2]", '{"address": 5}'])
def test_a_malformed_scheduler_file_is_one_error(tmp_path, monkeypatch, content):
    from facebatch.errors import InputError

    monkeypatch.setattr(cluster, "CONNECT_TIMEOUT_S", 3)
    path = tmp_path / "sched.json"
    path.write_text(content)
    with pytest.raises(InputError, match="scheduler"):
        with cluster.open_client(cluster.ClusterOptions(scheduler_file=path)):
            pass
