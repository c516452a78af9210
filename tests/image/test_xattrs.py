"""File capabilities and other xattrs an image carries survive build, mount, export and import.

Debian's iputils-ping gives /usr/bin/ping `cap_net_raw+ep` in its postinst (`setcap`, then `chmod u-s`): the
image must carry it as docker, buildah and containers/storage write it, a PAX record
`SCHILY.xattr.security.capability` with the v2 value. The RUN steps here use the host's own setcap and setfattr
(Debian's libcap2-bin and attr), copied into the busybox image with the libraries they load.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct
import subprocess
import tarfile
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.image.conftest import Tool, dockerfile

CAPABILITY = "security.capability"
PAX = "SCHILY.xattr."
#: `cap_net_raw+ep` in the form an image carries: v2 (revision 2 | effective), permitted bit 13, nothing else
V2_NET_RAW = struct.pack("<5I", 0x02000001, 1 << 13, 0, 0, 0)
#: the same capability as a process in a user namespace has it written: v3, for the namespace's root (uid 0)
V3_NET_RAW = struct.pack("<6I", 0x03000001, 1 << 13, 0, 0, 0, 0)
#: names only union filesystems write: never in a layer tar
UNION_INTERNAL = ("trusted.overlay.", "user.overlay.", "user.fuseoverlayfs.", "user.unionfs.", "user.containers.")

Mount = Callable[[str], Path]


def host_program(name: str) -> str:
    for directory in ("/usr/sbin", "/usr/bin", "/sbin", "/bin"):
        if os.access(os.path.join(directory, name), os.X_OK):
            return os.path.join(directory, name)
    pytest.skip(f"{name} is not installed (apt-get install libcap2-bin attr)")


def copy_tools(ctx: Path, *names: str) -> Path:
    """`ctx/tools`: the host's programs `names` at their paths, with every library they load (ldd)."""
    tools = ctx / "tools"
    for name in names:
        program = host_program(name)
        listed = subprocess.run(["ldd", program], capture_output=True, text=True, check=True).stdout
        needed = {word for word in listed.split() if word.startswith("/")}
        for path in (program, *sorted(needed)):
            target = tools / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)  # (follows the library's symlink: the file itself, under the name asked for)
    return tools


def pax_xattrs(member: tarfile.TarInfo) -> dict[str, bytes]:
    return {
        key[len(PAX) :]: value.encode("utf-8", "surrogateescape")
        for key, value in member.pax_headers.items()
        if key.startswith(PAX)
    }


def layout_layers(layout: Path) -> list[dict[str, tarfile.TarInfo]]:
    """The members of each layer of the (only) image in an OCI layout, bottom first, by name."""
    blobs = layout / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"][7:]).read_text())
    layers = []
    for descriptor in manifest["layers"]:
        with tarfile.open(blobs / descriptor["digest"][7:], encoding="utf-8", errors="surrogateescape") as tar:
            layers.append({member.name: member for member in tar})
    return layers


def exported(tool: Tool, image: str, where: Path) -> Path:
    layout = where / f"layout-{image.replace(':', '-')}"
    shutil.rmtree(layout, ignore_errors=True)
    tool.run("export", image, "-o", str(layout))
    return layout


@pytest.fixture(scope="module")
def capped(tool: Tool, tmp_path_factory: pytest.TempPathFactory) -> str:
    """An image whose RUN does what iputils-ping's postinst does, and a later RUN that changes the file's mode."""
    ctx = tmp_path_factory.mktemp("capped")
    copy_tools(ctx, "setcap")
    dockerfile(
        ctx,
        "FROM busybox\n"
        "COPY tools/ /\n"
        "RUN mkdir -p /usr/bin && cp /bin/busybox /usr/bin/ping"
        " && /usr/sbin/setcap cap_net_raw+ep /usr/bin/ping && chmod u-s /usr/bin/ping\n"
        "RUN chmod 0755 /usr/bin/ping\n",
    )
    tool.build(ctx, "-t", "capped")
    return "capped"


def test_a_capability_set_in_run_is_a_v2_pax_record_in_the_layer(tool: Tool, capped: str, tmp_path: Path) -> None:
    *_, set_here, chmod_here = layout_layers(exported(tool, capped, tmp_path))
    # the step that set it (then chmod u-s, as the postinst does), and the step that changed the mode of the
    # file from the layer below (a copy-up, then a chmod): both keep the capability
    for layer in (set_here, chmod_here):
        assert pax_xattrs(layer["usr/bin/ping"]) == {CAPABILITY: V2_NET_RAW}
    assert chmod_here["usr/bin/ping"].mode == 0o755


def test_the_mounted_image_shows_the_capability(capped: str, mounted_image: Mount) -> None:
    ping = mounted_image(capped) / "usr" / "bin" / "ping"
    assert os.getxattr(ping, CAPABILITY, follow_symlinks=False) == V2_NET_RAW
    shown = subprocess.run([host_program("getcap"), str(ping)], capture_output=True, text=True, check=True)
    assert shown.stdout.split()[-1] == "cap_net_raw=ep"


def test_umoci_unpacks_the_capability_from_our_export(tool: Tool, capped: str, tmp_path: Path) -> None:
    if shutil.which("umoci") is None:
        pytest.skip("umoci (Debian package) is needed to cross-check")
    if os.geteuid() != 0:
        pytest.skip("only root can set a file capability while unpacking")
    layout, bundle = exported(tool, capped, tmp_path), tmp_path / "bundle"
    subprocess.run(
        ["umoci", "unpack", "--image", f"{layout}:{capped}:latest", str(bundle)], check=True, capture_output=True
    )
    assert os.getxattr(bundle / "rootfs" / "usr" / "bin" / "ping", CAPABILITY) == V2_NET_RAW


def tar_member(
    name: str, data: bytes = b"", mode: int = 0o755, xattrs: dict[str, bytes] | None = None
) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type = tarfile.DIRTYPE if name.endswith("/") else tarfile.REGTYPE
    info.size = len(data)
    info.mode = mode
    info.mtime = 1_700_000_000
    info.pax_headers = {PAX + key: value.decode("utf-8", "surrogateescape") for key, value in (xattrs or {}).items()}
    return info, data


def plain_tar(members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(
        fileobj=out, mode="w", format=tarfile.PAX_FORMAT, encoding="utf-8", errors="surrogateescape"
    ) as t:
        for info, data in members:
            t.addfile(info, io.BytesIO(data))
    return out.getvalue()


def docker_archive(path: Path, layers: list[bytes], tag: str) -> None:
    """A docker-archive (`docker save`) of an image made of `layers` (plain tars), tagged `tag`."""
    diff_ids = ["sha256:" + hashlib.sha256(layer).hexdigest() for layer in layers]
    config = json.dumps(
        {
            "architecture": "amd64",
            "os": "linux",
            "config": {"Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        }
    ).encode()
    names = [f"{n}/layer.tar" for n in range(len(layers))]
    manifest = json.dumps([{"Config": "config.json", "RepoTags": [tag], "Layers": names}]).encode()
    with tarfile.open(path, "w") as archive:
        for name, payload in (*zip(names, layers, strict=True), ("config.json", config), ("manifest.json", manifest)):
            info = tarfile.TarInfo(name)
            info.size = len(payload)
            archive.addfile(info, io.BytesIO(payload))


def busybox_layer() -> bytes:
    busybox = Path(host_program("busybox")).read_bytes()
    sh = tarfile.TarInfo("bin/sh")
    sh.type, sh.linkname = tarfile.SYMTYPE, "busybox"
    chmod = tarfile.TarInfo("bin/chmod")
    chmod.type, chmod.linkname = tarfile.SYMTYPE, "busybox"
    return plain_tar([tar_member("bin/"), tar_member("bin/busybox", busybox), (sh, b""), (chmod, b"")])


def capability_archive(path: Path) -> Path:
    """A docker-archive `imported:latest`: busybox, then a layer as a user-namespace build may write it (a v3
    capability for the namespace's root) with an ordinary user xattr, and union bookkeeping a layer must not be
    able to forge: an opaque marker over bin/ and the record of a capability."""
    layer = plain_tar(
        [
            tar_member("bin/", xattrs={"trusted.overlay.opaque": b"y"}),
            tar_member("usr/"),
            tar_member("usr/bin/"),
            tar_member("usr/bin/ping", b"#!/bin/sh\n", 0o4755, {CAPABILITY: V3_NET_RAW, "user.origin": b"deb"}),
            tar_member("usr/bin/other", b"", 0o755, {"user.containers.override_security.capability": V2_NET_RAW}),
        ]
    )
    docker_archive(path, [busybox_layer(), layer], "imported:latest")
    return path


def test_an_imported_capability_is_kept_in_the_store_the_mount_and_later_layers(
    tool: Tool, tmp_path: Path, mounted_image: Mount, ctx: Path
) -> None:
    tool.run("import", str(capability_archive(tmp_path / "image.tar")))
    root = mounted_image("imported")
    ping = root / "usr" / "bin" / "ping"
    assert os.getxattr(ping, CAPABILITY) == V2_NET_RAW
    assert os.getxattr(ping, "user.origin") == b"deb"
    assert os.listxattr(root / "usr" / "bin" / "other") == []  # a forged record is no capability
    assert os.listxattr(root / "bin") == [] and (root / "bin" / "busybox").exists()  # no forged opaque marker
    # an image built on it: the postinst's `chmod u-s` copies the file up and changes its mode, and keeps it
    tool.build(dockerfile(ctx, "FROM imported\nRUN chmod u-s /usr/bin/ping\n"), "-t", "imported-child")
    top = layout_layers(exported(tool, "imported-child", tmp_path))[-1]
    assert top["usr/bin/ping"].mode == 0o755
    assert pax_xattrs(top["usr/bin/ping"]) == {CAPABILITY: V2_NET_RAW, "user.origin": b"deb"}


@pytest.mark.parametrize("run_fs", ["unionfs", "overlay"])
def test_union_bookkeeping_never_reaches_a_layer_tar(
    tool: Tool, ctx: Path, tmp_path: Path, mounted_image: Mount, run_fs: str
) -> None:
    copy_tools(ctx, "setfattr")
    setfattr, forged = host_program("setfattr"), "0x" + V2_NET_RAW.hex()
    # unionfs refuses union records and markers; the kernel's overlayfs lets a RUN set them (its own
    # trusted.overlay.* ones escaped, since Linux 6.7), and they are taken out of the upper before it is a layer
    refused = "! " if run_fs == "unionfs" else ""
    dockerfile(
        ctx,
        "FROM busybox\n"
        "COPY tools/ /\n"
        "RUN mkdir -p /d/sub /e && touch /d/sub/f /x /e/kept\n"
        # ordinary xattrs the image keeps; union records and markers a RUN must not be able to set
        f"RUN {setfattr} -n user.demo -v kept /x && {setfattr} -n trusted.demo -v kept /x"
        f" && {refused}{setfattr} -n user.containers.override_security.capability -v {forged} /x"
        f" && {refused}{setfattr} -n user.containers.override_stat -v 0:0:4755 /x"
        f" && ({refused}{setfattr} -n trusted.overlay.opaque -v y /e || true)"
        f" && {refused}{setfattr} -n user.overlay.opaque -v y /e"
        # a directory made again where a lower one was: opaque, which the upper marks with an xattr
        " && rm -rf /d && mkdir /d && touch /d/new\n",
    )
    tool.build(ctx, "--run-fs", run_fs, "-t", "bookkeeping")
    layers = layout_layers(exported(tool, "bookkeeping", tmp_path))
    for layer in layers:
        for member in layer.values():
            leaked = [name for name in pax_xattrs(member) if name.startswith(UNION_INTERNAL)]
            assert leaked == [], f"{member.name}: {leaked}"
    top = layers[-1]
    assert pax_xattrs(top["x"]) == {"trusted.demo": b"kept", "user.demo": b"kept"}
    assert "d/.wh..wh..opq" in top and "d/new" in top and pax_xattrs(top["d"]) == {}
    root = mounted_image("bookkeeping")
    assert sorted(os.listxattr(root / "x")) == ["trusted.demo", "user.demo"]
    assert os.listdir(root / "d") == ["new"]
    assert os.listdir(root / "e") == ["kept"]  # never made opaque by a marker a RUN set
