"""Malformed input of every kind: the only outcomes are a result or a clean one-line error, never a crash."""

from __future__ import annotations

import io
import json
import tarfile
import tempfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from imagebuild.dockerfile import DockerfileError, parse
from imagebuild.layer import LayerError, extract_layer_tar
from imagebuild.oci import ImageConfig, Index, Manifest, OCIError
from unionfs.config import MountConfig, apply_options
from unionfs.errors import ConfigError
from unionfs.ownership import OverrideError
from unionfs.ownership import parse as parse_override

KEYWORDS = [
    "FROM",
    "RUN",
    "COPY",
    "ADD",
    "ENV",
    "ARG",
    "LABEL",
    "EXPOSE",
    "CMD",
    "ENTRYPOINT",
    "WORKDIR",
    "USER",
    "VOLUME",
    "SHELL",
    "HEALTHCHECK",
    "ONBUILD",
    "STOPSIGNAL",
    "#",
    "\\",
    "<<EOF",
    "EOF",
    "[",
    "]",
    '"',
    "--from=",
    "AS",
    "$",
    "${",
    "}",
    ":-",
    "\n",
    " ",
    "\t",
    "=",
    "'",
]
FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def one_line(message: str) -> None:
    assert message and "\n" not in message.strip() and "Traceback" not in message


@FAST
@given(st.lists(st.one_of(st.sampled_from(KEYWORDS), st.text(max_size=8)), max_size=40).map("".join))
def test_dockerfiles(text: str) -> None:
    try:
        parse(text, "Dockerfile")
    except DockerfileError as exc:
        one_line(str(exc))
        assert str(exc).startswith("Dockerfile:")


OPTION_WORDS = [
    "lowerdir=",
    "upperdir=",
    "workdir=",
    "uidmapping=",
    "gidmapping=",
    "whiteout=",
    "metacopy=",
    "squash_to_uid=",
    "timeout=",
    ",",
    ":",
    "\\",
    "0",
    "1000",
    "65536",
    "a",
    "/x",
    "=",
    "ro",
    "file",
]


@FAST
@given(st.lists(st.one_of(st.sampled_from(OPTION_WORDS), st.text(max_size=5)), max_size=20).map("".join))
def test_mount_option_strings(text: str) -> None:
    try:
        apply_options(MountConfig("mnt"), text)
    except ConfigError as exc:
        one_line(str(exc))


@FAST
@given(st.binary(max_size=40) | st.text(max_size=40).map(str.encode))
def test_ownership_records(value: bytes) -> None:
    try:
        parse_override(value)
    except OverrideError as exc:
        one_line(str(exc))


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=10),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "schemaVersion",
                    "mediaType",
                    "config",
                    "layers",
                    "digest",
                    "size",
                    "manifests",
                    "rootfs",
                    "diff_ids",
                    "architecture",
                    "os",
                    "history",
                    "annotations",
                    "platform",
                ]
            ),
            inner,
            max_size=6,
        )
    ),
    max_leaves=20,
)


@FAST
@given(JSON)
def test_manifests_indexes_and_configs(document: object) -> None:
    data = json.dumps(document).encode()
    for model in (Manifest, Index, ImageConfig):
        try:
            model.from_json(data)
        except OCIError as exc:
            one_line(str(exc))


@st.composite
def tars(draw: st.DrawFn) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for _ in range(draw(st.integers(0, 6))):
            name = draw(
                st.sampled_from(
                    [
                        "a",
                        "a/b",
                        "../x",
                        "/abs",
                        "./c",
                        "a/../../y",
                        ".wh.a",
                        "d/.wh..wh..opq",
                        "l",
                        "l/inside",
                        "dev",
                        "h",
                    ]
                )
            )
            info = tarfile.TarInfo(name)
            info.type = draw(
                st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE])
            )
            info.linkname = draw(st.sampled_from(["", "a", "/etc/passwd", "../../x", "l"]))
            data = draw(st.binary(max_size=20)) if info.type == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw = out.getvalue()
    cut = draw(st.integers(0, len(raw)))
    return raw if draw(st.booleans()) else raw[:cut]


@settings(max_examples=150, deadline=None)
@given(tars())
def test_layer_tars(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as base:
        try:
            extract_layer_tar(io.BytesIO(raw), f"{base}/out", whiteout_form="file", rootless=True)
        except LayerError as exc:
            one_line(str(exc))
