"""Pure logic of the registry cache, -o and ADD of URLs: flags read as buildx reads them, layers flattened as a
mount shows them, URL file names as BuildKit gives them, the cache config round trip."""

from __future__ import annotations

import io
import tarfile

import pytest

from imagebuild.builder import addurl, outputs, remotecache
from imagebuild.builder.copydest import CopyError
from imagebuild.errors import BuildError
from imagebuild.layer.flatten import flatten
from imagebuild.oci import Descriptor, mediatypes
from imagebuild.store.images import Layer
from imagebuild.transport import buildcache

Entry = tuple[str, str, bytes | str | None]  # (name, kind, data or link target)


def layer(*entries: Entry) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1000
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            elif kind == "file":
                assert isinstance(data, bytes)
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
            elif kind == "link":
                info.type, info.linkname = tarfile.LNKTYPE, str(data)
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, str(data)
                tar.addfile(info)
            elif kind == "whiteout-dev":
                info.type = tarfile.CHRTYPE
                tar.addfile(info)
    return out.getvalue()


def flattened(tmp_path: object, *layers: bytes) -> dict[str, tuple[str, bytes | str]]:
    out = io.BytesIO()
    flatten([lambda data=data: io.BytesIO(data) for data in layers], out, str(tmp_path))  # type: ignore[misc]
    out.seek(0)
    result: dict[str, tuple[str, bytes | str]] = {}
    with tarfile.open(fileobj=out) as tar:
        for member in tar:
            if member.isreg():
                stream = tar.extractfile(member)
                assert stream is not None
                result[member.name] = ("file", stream.read())
            elif member.islnk():
                result[member.name] = ("link", member.linkname)
            elif member.issym():
                result[member.name] = ("symlink", member.linkname)
            else:
                result[member.name] = ("dir", "")
    return result


def test_flatten_applies_whiteouts_opaque_dirs_and_shadowing(tmp_path: object) -> None:
    bottom = layer(
        ("etc", "dir", None),
        ("etc/keep", "file", b"keep"),
        ("etc/gone", "file", b"gone"),
        ("opq", "dir", None),
        ("opq/old", "file", b"old"),
        ("was-dir", "dir", None),
        ("was-dir/child", "file", b"hidden by a file above"),
        ("dev-gone", "file", b"x"),
    )
    top = layer(
        ("etc", "dir", None),
        ("etc/.wh.gone", "file", b""),
        ("etc/keep", "file", b"newer"),
        ("opq", "dir", None),
        ("opq/.wh..wh..opq", "file", b""),
        ("opq/new", "file", b"new"),
        ("was-dir", "file", b"now a file"),
        ("dev-gone", "whiteout-dev", None),
    )
    got = flattened(tmp_path, bottom, top)
    assert got == {
        "etc": ("dir", ""),
        "etc/keep": ("file", b"newer"),
        "opq": ("dir", ""),
        "opq/new": ("file", b"new"),
        "was-dir": ("file", b"now a file"),
    }
    assert list(got) == sorted(got)


def test_a_whiteout_hides_only_the_layers_below_it(tmp_path: object) -> None:
    same = layer(("d", "dir", None), ("d/.wh.f", "file", b""), ("d/f", "file", b"made again in the same layer"))
    got = flattened(tmp_path, layer(("d", "dir", None), ("d/f", "file", b"old")), same)
    assert got["d/f"] == ("file", b"made again in the same layer")


def test_hard_links_come_after_their_target_or_become_copies(tmp_path: object) -> None:
    bottom = layer(("a", "file", b"first"), ("z-link", "link", "a"))
    top = layer(("a", "file", b"replaced"), ("b", "file", b"bee"), ("0-link", "link", "b"))
    out = io.BytesIO()
    flatten([lambda: io.BytesIO(bottom), lambda: io.BytesIO(top)], out, str(tmp_path))  # type: ignore[list-item]
    out.seek(0)
    with tarfile.open(fileobj=out) as tar:
        names = tar.getnames()
    got = flattened(tmp_path, bottom, top)
    assert got["0-link"] == ("link", "b") and names.index("0-link") > names.index("b")
    assert got["z-link"] == ("file", b"first")  # its target was replaced above: the file it named, copied
    assert got["a"] == ("file", b"replaced")


@pytest.mark.parametrize(
    ("text", "kind", "dest"),
    [
        ("type=local,dest=out", "local", "out"),
        ("out", "local", "out"),
        ("-", "tar", "-"),
        ("type=tar,dest=-", "tar", "-"),
        ("type=oci,dest=image.tar,name=app", "oci", "image.tar"),
    ],
)
def test_output_flags(text: str, kind: str, dest: str) -> None:
    assert outputs.parse(text) == outputs.Output(kind, dest)


@pytest.mark.parametrize("text", ["type=docker", "type=local", "type=local,dest=-", "type=tar,dest=x,compression=gzip"])
def test_bad_output_flags(text: str) -> None:
    with pytest.raises(BuildError):
        outputs.parse(text)


def test_cache_flags() -> None:
    spec = remotecache.parse_spec("type=registry,ref=127.0.0.1:5000/app:cache,mode=max", "--cache-to")
    assert (str(spec.ref), spec.mode) == ("127.0.0.1:5000/app:cache", "max")
    assert remotecache.parse_spec("localhost:5000/app:cache", "--cache-from").mode == "min"
    assert remotecache.parse_spec("type=registry,ref=r.io/a:b,ignore-error=true", "--cache-to").ignore_error
    assert not remotecache.parse_spec("type=registry,ref=r.io/a:b", "--cache-to").ignore_error
    for bad in (
        "type=gha",
        "type=registry",
        "type=registry,ref=r.io/a:b,mode=all",
        "type=registry,ref=x,bad",
        "type=registry,ref=r.io/a:b,ignore-error=maybe",
        "type=registry,ref=r.io/a:b,compression=zstd",
    ):
        with pytest.raises(BuildError):
            remotecache.parse_spec(bad, "--cache-to")


def test_url_file_names_as_buildkit_gives_them() -> None:
    assert addurl.file_name("http://h/dir/tool.tar.gz?x=1#f") == "tool.tar.gz"
    assert addurl.file_name("https://h/a%20b") == "a b"
    assert addurl.file_name("http://h/") == addurl.UNNAMED == addurl.file_name("http://h")
    assert addurl.file_name("http://h/x/%2e%2e") == addurl.UNNAMED
    assert addurl.parse_checksum("sha256:" + "A" * 64) == ("sha256", "a" * 64)
    for bad in ("sha256:abc", "md5:" + "0" * 32, "0" * 64, "sha256:" + "g" * 64):
        with pytest.raises(CopyError):
            addurl.parse_checksum(bad)


def test_cache_config_round_trip() -> None:
    blob = Descriptor(media_type=mediatypes.OCI_LAYER_GZIP, digest="sha256:" + "1" * 64, size=10)
    other = Descriptor(media_type=mediatypes.OCI_LAYER_GZIP, digest="sha256:" + "2" * 64, size=20)
    records = [
        buildcache.Record("a" * 64, Layer("sha256:" + "3" * 64, blob), "2026-01-01T00:00:00Z"),
        buildcache.Record("b" * 64, Layer("sha256:" + "4" * 64, other), "2026-01-02T00:00:00Z"),
        buildcache.Record("c" * 64, Layer("sha256:" + "3" * 64, blob), "2026-01-03T00:00:00Z"),  # same layer
    ]
    data = buildcache.config_bytes(records)
    back = buildcache.parse_config(data, [blob, other], "test")
    assert back == {r.key: r for r in records}
    assert len(__import__("json").loads(data)["layers"]) == 2
    with pytest.raises(BuildError, match="not a build cache"):
        buildcache.parse_config(data, [blob], "test")  # a layer the manifest does not carry
