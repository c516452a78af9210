"""POSIX ACLs in layer tars: written as `SCHILY.xattr.system.posix_acl_*` PAX records (the binary xattr value),
the form containers/storage and docker read back with lsetxattr, from real ACLs and from a rootless layer's
records alike; extracted as real ACLs by root and as records rootless."""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest

from imagebuild.layer import extract_layer_tar, write_layer_tar

pytestmark = [
    pytest.mark.skipif(shutil.which("setfacl") is None, reason="setfacl (Debian: acl) is not installed"),
    pytest.mark.skipif(os.geteuid() != 0, reason="real ACLs on files of other owners need root"),
]

ACCESS = "system.posix_acl_access"
DEFAULT = "system.posix_acl_default"
RECORD = "user.containers.override_"


def getfacl(path: Path) -> str:
    done = subprocess.run(["getfacl", "--omit-header", "--numeric", str(path)], check=True, capture_output=True)
    return done.stdout.decode()


def layer_with_acls(root: Path) -> None:
    (root / "dir").mkdir(parents=True)
    (root / "dir" / "f").write_text("x")
    subprocess.run(["setfacl", "-m", "u:1234:rwx,g:2345:r", root / "dir" / "f"], check=True)
    subprocess.run(["setfacl", "-d", "-m", "u:1234:rwx", root / "dir"], check=True)


def pax(data: bytes) -> dict[str, dict[str, str]]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: dict(m.pax_headers) for m in tar.getmembers()}


def test_real_acls_go_into_the_tar_and_come_back(tmp_path: Path) -> None:
    layer = tmp_path / "layer"
    layer_with_acls(layer)
    out = io.BytesIO()
    write_layer_tar(str(layer), out, mtime_clamp=None)
    headers = pax(out.getvalue())
    value = os.getxattr(layer / "dir" / "f", ACCESS)
    assert headers["dir/f"]["SCHILY.xattr." + ACCESS].encode("utf-8", "surrogateescape") == value
    assert "SCHILY.xattr." + DEFAULT in headers["dir"]

    dest = tmp_path / "extracted"
    extract_layer_tar(io.BytesIO(out.getvalue()), str(dest), whiteout_form="chardev", rootless=False, sync=False)
    for name in ("dir", "dir/f"):
        assert getfacl(dest / name) == getfacl(layer / name), name
        assert oct(os.stat(dest / name).st_mode) == oct(os.stat(layer / name).st_mode), name

    rootless = tmp_path / "rootless"
    extract_layer_tar(io.BytesIO(out.getvalue()), str(rootless), whiteout_form="file", rootless=True, sync=False)
    assert os.getxattr(rootless / "dir" / "f", RECORD + ACCESS) == value
    assert ACCESS not in os.listxattr(rootless / "dir" / "f")
    assert RECORD + DEFAULT in os.listxattr(rootless / "dir")

    again = io.BytesIO()  # a rootless layer's records are written as the ACLs they keep
    write_layer_tar(str(rootless), again, mtime_clamp=None)
    assert pax(again.getvalue())["dir/f"]["SCHILY.xattr." + ACCESS] == headers["dir/f"]["SCHILY.xattr." + ACCESS]
    assert not any(RECORD + ACCESS in key for key in pax(again.getvalue())["dir/f"])
