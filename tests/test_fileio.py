"""Writing outputs: atomic replacement, no clobbering, and targets that are not plain files."""

from __future__ import annotations

import os
import threading

import pytest

from controlgic_cli.io.fileio import check_target, write_atomic


def test_a_new_file_is_written_and_an_existing_one_kept_without_overwrite(tmp_path):
    target = tmp_path / "out.cgic"
    write_atomic(target, b"first")
    with pytest.raises(FileExistsError):
        write_atomic(target, b"second")
    assert target.read_bytes() == b"first"
    write_atomic(target, b"second", overwrite=True)
    assert target.read_bytes() == b"second"
    assert [p.name for p in tmp_path.iterdir()] == ["out.cgic"]  # no temporary file left


def test_a_symbolic_link_is_written_through_and_stays_a_link(tmp_path):
    real = tmp_path / "real.png"
    real.write_bytes(b"old")
    link = tmp_path / "link.png"
    link.symlink_to(real)
    with pytest.raises(FileExistsError):
        write_atomic(link, b"new")
    write_atomic(link, b"new", overwrite=True)
    assert link.is_symlink() and real.read_bytes() == b"new"


def test_a_pipe_is_written_into_not_replaced(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()))
    reader.start()
    write_atomic(fifo, b"through the pipe")  # no -f needed: there is no file to clobber
    reader.join(timeout=10)
    assert received == [b"through the pipe"]
    assert fifo.is_fifo()


def test_dev_null_takes_output_without_force():
    check_target("/dev/null", overwrite=False)
    write_atomic("/dev/null", b"discarded")
    assert os.path.exists("/dev/null") and not os.path.isfile("/dev/null")


def test_a_folder_is_not_a_target(tmp_path):
    (tmp_path / "a.cgic").mkdir()
    with pytest.raises(IsADirectoryError, match="folder"):
        write_atomic(tmp_path / "a.cgic", b"x", overwrite=True)


def test_errors_name_the_output_not_the_hidden_temporary_file(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(tmp_path / ".out.cgic.abc123.part"))

    monkeypatch.setattr("controlgic_cli.io.fileio.os.replace", refuse)
    with pytest.raises(PermissionError) as caught:
        write_atomic(tmp_path / "out.cgic", b"x", overwrite=True)
    assert caught.value.filename == str(tmp_path / "out.cgic")
    assert not list(tmp_path.iterdir())
