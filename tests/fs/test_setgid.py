"""The setgid bit cleared as ext4 clears it: a chmod, an access ACL, a truncation or a write by a caller outside
the file's group, and without CAP_FSETID, drops it; root and the group's members keep it. Each caller runs the
same commands in a plain directory and in the mount (the files in a lower layer, so each change copies up
first) and the modes must be the same, and stay so after a remount."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.fs.conftest import Mounter

pytestmark = pytest.mark.skipif(shutil.which("setfacl") is None, reason="setfacl (Debian: acl) is not installed")

CALLER = 65534  # nobody
GROUP = 4444  # the files' group, none of the caller's unless given
#: name -> mode before the steps; every file is the caller's, in GROUP
FILES = {
    "chmod": 0o755,
    "chmod-dir/": 0o755,
    "acl": 0o2644,
    "acl-mask": 0o2754,
    "append": 0o2666,
    "trunc-open": 0o2766,
    "truncate": 0o2666,
    "write-x": 0o2676,
}
STEPS = """
chmod 2755 chmod chmod-dir
setfacl -m u:1234:r acl
setfacl -m u:1234:r,m::rx acl-mask
echo x >> append
echo x > trunc-open
truncate -s 1 truncate
echo x >> write-x
"""


def make(root: Path) -> None:
    root.mkdir()
    for name, mode in FILES.items():
        path = root / name
        if name.endswith("/"):
            path.mkdir()
        else:
            path.write_text(name)
        os.chown(path, CALLER, GROUP)
        os.chmod(path, mode)


def modes(root: Path) -> dict[str, str]:
    return {name: oct(os.stat(root / name).st_mode & 0o7777) for name in FILES}


def run_as(root: Path, uid: int, groups: list[int]) -> None:
    # cwd is entered before the ids change: the test's own directories above are root's alone
    subprocess.run(
        ["sh", "-ec", STEPS], cwd=root, user=uid, group=uid, extra_groups=groups, check=True, capture_output=True
    )


@pytest.mark.parametrize(
    ("uid", "groups"), [(CALLER, []), (CALLER, [GROUP]), (0, [])], ids=["outsider", "member", "root"]
)
def test_setgid_cleared_as_on_ext4(mounter: Mounter, tmp_path: Path, uid: int, groups: list[int]) -> None:
    os.chmod(tmp_path, 0o755)
    plain = tmp_path / "plain"
    make(plain)
    run_as(plain, uid, groups)
    expected = modes(plain)
    if uid == CALLER and not groups:  # what the kernel does on ext4 (Linux 6.2 and later for the writes)
        assert all(not int(mode, 8) & 0o2000 for mode in expected.values())
    lower, upper, work = tmp_path / "lower", tmp_path / "upper", tmp_path / "work"
    make(lower)
    upper.mkdir()
    work.mkdir()
    mount = mounter([lower], upper, work, ("allow_other",))
    run_as(mount.mountpoint, uid, groups)
    assert modes(mount.mountpoint) == expected
    mount.close()
    again = mounter([lower], upper, work, name="again")
    assert modes(again.mountpoint) == expected
