"""The running-instances file (its format and its reader) and the allocation of instance indices."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fridaymorning.models import Instance
from fridaymorning.platform.local import (
    STATE_FILE_NAME,
    InstanceRecord,
    next_index,
    read_instance_file,
    write_instance_file,
)
from fridaymorning.procfs import read_cmdline, read_start_time

HAS_PROC = Path("/proc/self/stat").exists()

RECORD = InstanceRecord(
    pid=4242,
    version="v1",
    label="v1__baseline",
    index=3,
    host="127.0.0.1",
    port=8123,
    argv=["app", "--port", "8123"],
    cmdline=["/bin/sh", "app", "--port", "8123"],
    start_time=987654,
)


@pytest.mark.parametrize(
    ("name", "taken", "expected"),
    [
        ("v1", [], 1),
        ("v1", [("v1", 1), ("v1", 2)], 3),
        ("v1", [("v1", 2)], 3),  # gaps are not filled: a higher index may still be routed
        ("v1", [("v2", 5)], 1),  # each name counts on its own
        ("v1__baseline", [("v1", 4)], 1),  # a labelled copy of v1 has its own server names
        ("v1__baseline", [("v1__baseline", 1), ("v1", 4)], 2),
    ],
)
def test_next_index_continues_after_the_highest_running_index_of_the_name(
    name: str, taken: list[tuple[str, int]], expected: int
) -> None:
    """New instances start one above the highest running index of the same name, or at 1."""
    assert next_index(name, taken) == expected


def test_record_rebuilds_the_instance_with_the_pid_as_ref() -> None:
    """An adopted instance keeps the version, label, index, host and port it was started with; ref is the
    pid."""
    assert RECORD.instance == Instance("v1", 3, "127.0.0.1", 8123, "4242", "v1__baseline")
    assert RECORD.instance.server == "v1__baseline-3"


def test_file_lists_every_field_that_identifies_an_instance(tmp_path: Path) -> None:
    """The file is JSON with fm's pid and, per instance, exactly the fields adoption and cleanup rely on."""
    write_instance_file(tmp_path, [RECORD])
    document = json.loads((tmp_path / STATE_FILE_NAME).read_text())
    assert document == {
        "fm_pid": os.getpid(),
        "instances": [
            {
                "pid": 4242,
                "version": "v1",
                "label": "v1__baseline",
                "index": 3,
                "host": "127.0.0.1",
                "port": 8123,
                "argv": ["app", "--port", "8123"],
                "cmdline": ["/bin/sh", "app", "--port", "8123"],
                "start_time": 987654,
            }
        ],
    }
    assert read_instance_file(tmp_path) == [RECORD]


def test_writing_no_record_removes_the_file(tmp_path: Path) -> None:
    """When nothing runs, no file is left to mislead a later fm."""
    write_instance_file(tmp_path, [RECORD])
    write_instance_file(tmp_path, [])
    assert not (tmp_path / STATE_FILE_NAME).exists()


@pytest.mark.parametrize(
    "change",
    [
        {"pid": "4242"},
        {"pid": True},
        {"pid": 1},
        {"index": 0},
        {"port": 70000},
        {"argv": []},
        {"argv": "app --port 8123"},
        {"start_time": "987654"},
    ],
)
def test_malformed_entries_are_skipped_and_the_others_kept(tmp_path: Path, change: dict[str, object]) -> None:
    """An entry with a wrong field cannot identify a process safely; it is dropped, its neighbours are not."""
    good = RECORD.model_dump(mode="json")
    bad = {**good, **change}
    (tmp_path / STATE_FILE_NAME).write_text(json.dumps({"fm_pid": 1, "instances": [bad, good]}))
    assert read_instance_file(tmp_path) == [RECORD]


@pytest.mark.parametrize("content", ["", "[]", '{"instances": 3}', '{"instances": [{"pid": '])
def test_unreadable_file_reads_as_empty(tmp_path: Path, content: str) -> None:
    """A corrupt file reads as no records, never as an error that would stop fm from starting."""
    (tmp_path / STATE_FILE_NAME).write_text(content)
    assert read_instance_file(tmp_path) == []


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc")
def test_start_time_names_one_process() -> None:
    """/proc/<pid>/stat field 22 is stable for a process, later for a later one, and None once it is gone."""
    own = read_start_time(os.getpid())
    assert own is not None and own == read_start_time(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        child_start = read_start_time(child.pid)
        assert child_start is not None and child_start >= own
    finally:
        child.kill()
        child.wait(timeout=5)
    assert read_start_time(child.pid) is None
    assert read_start_time(2**22 + 12345) is None


@pytest.mark.skipif(not HAS_PROC, reason="needs /proc")
def test_record_of_this_process_is_verified_and_a_changed_one_is_not() -> None:
    """is_verified needs the same pid, start time and command line; any difference means another process."""
    cmdline = read_cmdline(os.getpid())
    assert cmdline is not None
    record = RECORD.model_copy(
        update={"pid": os.getpid(), "cmdline": cmdline, "start_time": read_start_time(os.getpid())}
    )
    assert record.is_verified()
    assert not record.model_copy(update={"cmdline": ["other"]}).is_verified()
    assert not record.model_copy(update={"start_time": 1}).is_verified()
    assert not record.model_copy(update={"start_time": None}).is_verified()
