"""A bug answered EIO is recorded where the mount's caller can read it (unionfs.api.UnionMount.io_errors).

The fault is put into the daemon from outside, for this test alone: a sitecustomize on the daemon's PYTHONPATH
makes one handler fail with an exception no filesystem operation raises, for one xattr name.
"""

from __future__ import annotations

import errno
import os
import textwrap
from pathlib import Path

import pytest

from tests.support import write
from unionfs.api import UnionMount

FAULT = textwrap.dedent(
    """
    from unionfs import union

    _getxattr = union.UnionFS.getxattr

    def getxattr(self, node, name):
        if name == "user.fault":
            raise ZeroDivisionError("a fault the test put in")
        return _getxattr(self, node, name)

    union.UnionFS.getxattr = getxattr
    """
)


@pytest.fixture
def faulty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Daemons started from here on fail getxattr of user.fault with an unexpected exception."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(FAULT)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]).rstrip(":"))


def layers(tmp_path: Path) -> tuple[Path, Path, Path, Path]:
    lower, upper, work, mnt = (tmp_path / name for name in ("lower", "upper", "work", "mnt"))
    write(lower / "file", "data\n")
    for d in (upper, work, mnt):
        d.mkdir()
    return lower, upper, work, mnt


@pytest.mark.usefixtures("faulty")
def test_a_bug_answered_eio_is_recorded_for_the_caller(tmp_path: Path) -> None:
    lower, upper, work, mnt = layers(tmp_path)
    mount = UnionMount(str(mnt), [str(lower)], str(upper), str(work)).mount()
    try:
        assert mount.io_errors() == []
        with pytest.raises(OSError) as expected:  # an ordinary answer is no bug: not recorded
            os.getxattr(mnt / "file", "user.other")
        assert expected.value.errno == errno.ENODATA
        assert mount.io_errors() == []
        with pytest.raises(OSError) as failed:
            os.getxattr(mnt / "file", "user.fault")
        assert failed.value.errno == errno.EIO
        (record,) = mount.io_errors()
        assert "getxattr" in record and "ZeroDivisionError: a fault the test put in" in record
        assert (mnt / "file").read_text() == "data\n"  # the mount goes on serving
    finally:
        mount.unmount()
    assert len(mount.io_errors()) == 1  # still readable once unmounted


def test_a_mount_without_bugs_records_nothing(tmp_path: Path) -> None:
    lower, upper, work, mnt = layers(tmp_path)
    mount = UnionMount(str(mnt), [str(lower)], str(upper), str(work)).mount()
    try:
        (mnt / "new").write_text("x")
        with pytest.raises(OSError):
            os.getxattr(mnt / "file", "user.fault")
    finally:
        mount.unmount()
    assert mount.io_errors() == []
