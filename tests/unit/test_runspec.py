"""`imagebuild run`'s flags as docker documents them: -p, -v, -e, --env-file, --entrypoint, -u, --network."""

from __future__ import annotations

import argparse
import itertools
from typing import Any

import pytest

from imagebuild.errors import BuildError
from imagebuild.network import pasta_command
from imagebuild.oci.models import ContainerConfig
from imagebuild.runspec import (
    DEFAULT_PATH,
    Bind,
    Port,
    command,
    environment,
    lookup_user,
    parse_env_file,
    parse_port,
    parse_volume,
    scoped,
    spec,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8080:5000", Port(None, (8080, 8080), (5000, 5000), "tcp", "8080:5000")),
        ("127.0.0.1:8080:80/udp", Port("127.0.0.1", (8080, 8080), (80, 80), "udp", "127.0.0.1:8080:80/udp")),
        ("[::1]:8080:80", Port("::1", (8080, 8080), (80, 80), "tcp", "[::1]:8080:80")),
        ("8000-8001:9000-9001/TCP", Port(None, (8000, 8001), (9000, 9001), "tcp", "8000-8001:9000-9001/TCP")),
        (":8080:80", Port(None, (8080, 8080), (80, 80), "tcp", ":8080:80")),
    ],
)
def test_publish_forms(text: str, expected: Port) -> None:
    assert parse_port(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("8080", "give the host port and the container's"),
        ("8080:5000/sctp", "protocol 'sctp' is not tcp or udp"),
        ("0:80", "out of range"),
        ("70000:80", "out of range"),
        ("http:80", "'http' is not a host port"),
        ("8080-8082:80-81", "ranges differ in length"),
        ("localhost:8080:80", "'localhost' is not an IP address"),
        ("[::1:8080:80", "in brackets"),
    ],
)
def test_publish_errors_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(BuildError, match=message) as caught:
        parse_port(text)
    assert "\n" not in str(caught.value) and str(caught.value).startswith(f"-p {text}:")


def test_volume_forms() -> None:
    assert parse_volume("/srv/data:/data", "/home/u") == Bind("/srv/data", "/data", False)
    assert parse_volume("/srv/data:/data/:ro", "/home/u") == Bind("/srv/data", "/data", True)
    assert parse_volume("./site:/usr/share/www:rw", "/home/u") == Bind("/home/u/site", "/usr/share/www", False)
    for text, message in [
        ("data:/data", "named volume"),
        ("/srv:data", "not absolute"),
        ("/srv:/", "cannot be replaced"),
        ("/srv", "HOST_PATH:CONTAINER_PATH"),
        ("/srv:/x:z", "unknown option 'z'"),
    ]:
        with pytest.raises(BuildError, match=message):
            parse_volume(text, "/")


def test_env_file_is_read_as_docker_reads_it() -> None:
    text = (
        "\ufeff# a comment\n"
        "\n"
        "PLAIN=value\n"
        "  INDENTED=yes\n"
        'QUOTED="kept as written"\n'
        "SPACES=  both ends  \n"
        "EMPTY=\n"
        "FROM_CALLER\n"
        "NOT_SET_ANYWHERE\n"
        "EQUALS=a=b\n"
    )
    entries = parse_env_file(text, "app.env", {"FROM_CALLER": "caller's"})
    assert entries == [
        ("PLAIN", "value"),
        ("INDENTED", "yes"),
        ("QUOTED", '"kept as written"'),
        ("SPACES", "  both ends  "),
        ("EMPTY", ""),
        ("FROM_CALLER", "caller's"),
        ("EQUALS", "a=b"),
    ]
    with pytest.raises(BuildError, match=r"--env-file app.env:2: variable 'BAD NAME' contains whitespace"):
        parse_env_file("OK=1\nBAD NAME=x\n", "app.env", {})
    with pytest.raises(BuildError, match=r"app\.env:1: '=x' has no variable name"):
        parse_env_file("=x\n", "app.env", {})


def test_environment_precedence_image_then_files_then_flags() -> None:
    env = environment(
        ["A=image", "B=image", "PATH=/image/bin"],
        [("B", "file"), ("C", "file")],
        ["C=flag", "D", "E", "F=x=y"],
        {"D": "caller", "PATH": "/caller"},
    )
    assert env == {"A": "image", "B": "file", "C": "flag", "D": "caller", "F": "x=y", "PATH": "/image/bin"}
    assert environment([], [], [], {})["PATH"] == DEFAULT_PATH
    with pytest.raises(BuildError, match="-e =x: '=x' has no variable name"):
        environment([], [], ["=x"], {})


@pytest.mark.parametrize(
    ("args", "entrypoint", "image_entrypoint", "image_cmd", "expected"),
    [
        ([], None, None, ["httpd", "-f"], ["httpd", "-f"]),
        (["ls", "/"], None, None, ["httpd"], ["ls", "/"]),
        ([], None, ["/entry.sh"], ["serve"], ["/entry.sh", "serve"]),
        (["debug"], None, ["/entry.sh"], ["serve"], ["/entry.sh", "debug"]),
        ([], "/bin/echo", ["/entry.sh"], ["serve"], ["/bin/echo"]),  # the image's CMD is dropped
        (["hi"], "/bin/echo", ["/entry.sh"], ["serve"], ["/bin/echo", "hi"]),
        ([], "", ["/entry.sh"], ["serve"], ["serve"]),  # --entrypoint "": the image's CMD alone
        (["ls"], "", ["/entry.sh"], ["serve"], ["ls"]),
        ([], "/bin/sh -c", None, None, ["/bin/sh -c"]),  # one word, as docker takes it
    ],
)
def test_entrypoint_and_command_follow_docker(
    args: list[str], entrypoint: str | None, image_entrypoint: list[str] | None, image_cmd: list[str] | None,
    expected: list[str],
) -> None:  # fmt: skip
    assert command(args, entrypoint, image_entrypoint, image_cmd) == expected


PASSWD = "root:x:0:0:root:/root:/bin/sh\nweb:x:1000:1001:web:/home/web:/bin/sh\nbad:x:notanumber:0::/:\n"
GROUP = "root:x:0:\nstaff:x:50:\nweb:x:1001:\n"


def test_users_resolve_in_the_image_as_docker_does() -> None:
    assert lookup_user("0", PASSWD, GROUP) == (0, 0, "/root")
    assert lookup_user("web", PASSWD, GROUP) == (1000, 1001, "/home/web")
    assert lookup_user("1000", PASSWD, GROUP) == (1000, 1001, "/home/web")  # a known uid: its passwd group
    assert lookup_user("4242", PASSWD, GROUP) == (4242, 0, "/")  # unknown uid: group 0, home /
    assert lookup_user("web:staff", PASSWD, GROUP) == (1000, 50, "/home/web")
    assert lookup_user("4242:77", "", "") == (4242, 77, "/")
    with pytest.raises(BuildError, match="user 'nobody' is not in the image's /etc/passwd"):
        lookup_user("nobody", PASSWD, GROUP)
    with pytest.raises(BuildError, match="group 'wheel' is not in the image's /etc/group"):
        lookup_user("web:wheel", PASSWD, GROUP)


def test_paths_resolve_within_the_container() -> None:
    links = {"/var/run": "/run", "/run/app": "../srv/app", "/up": "../../../..", "/loop": "/loop"}
    assert scoped("/var/run/app/sock", links.get) == "/srv/app/sock"
    assert scoped("/up/etc", links.get) == "/etc"  # never above the container's /
    assert scoped("/a/../b/./c/", links.get) == "/b/c"
    with pytest.raises(BuildError, match="too many levels of symbolic links"):
        scoped("/loop/x", links.get)


def flags(**given: Any) -> argparse.Namespace:
    defaults: dict[str, Any] = {
        "image": "app",
        "cmd": [],
        "entrypoint": None,
        "workdir": None,
        "publish": [],
        "network": None,
        "volume": [],
        "env": [],
        "user": None,
        "interactive": False,
        "tty": False,
    }
    return argparse.Namespace(**{**defaults, **given})


def test_network_follows_the_flags() -> None:
    config = ContainerConfig(cmd=["httpd"], working_dir="/app", user="1000:1000")
    assert spec(flags(), config, {}, []).network == "host"  # as before -p existed
    private = spec(flags(publish=["8080:5000"]), config, {}, [])
    assert private.network == "private" and private.ports[0].host == (8080, 8080)
    assert spec(flags(network="bridge"), config, {}, []).network == "private"
    none = spec(flags(network="none", publish=["8080:5000"]), config, {}, [])
    assert (none.network, none.ports, none.warnings) == (
        "none",
        [],
        ["published ports are discarded with --network none"],
    )
    with pytest.raises(BuildError, match="--network overlay: use one of host, none, bridge"):
        spec(flags(network="overlay"), config, {}, [])


def test_spec_takes_the_image_defaults_and_the_flags_over_them() -> None:
    config = ContainerConfig(cmd=["httpd"], working_dir="/app", user="1000:1000", env=["A=1"])
    plain = spec(flags(), config, {}, [])
    assert (plain.argv, plain.workdir, plain.user, plain.env["A"]) == (["httpd"], "/app", "1000:1000", "1")
    given = spec(flags(workdir="/tmp/", user="root", tty=True, cmd=["sh"]), config, {}, [])
    assert (given.argv, given.workdir, given.user, given.env["TERM"]) == (["sh"], "/tmp", "root", "xterm")
    with pytest.raises(BuildError, match="-w tmp: the working directory must be an absolute path"):
        spec(flags(workdir="tmp"), config, {}, [])
    with pytest.raises(BuildError, match="'/d' is given twice"):
        spec(flags(volume=["/a:/d", "/b:/d/"]), config, {}, [])
    with pytest.raises(BuildError, match="has no ENTRYPOINT or CMD"):
        spec(flags(), ContainerConfig(), {}, [])


def test_pasta_forwards_the_published_ports_and_nothing_else() -> None:
    ports = [parse_port("8080:5000"), parse_port("127.0.0.1:5353:53/udp"), parse_port("9000-9001:7000-7001")]
    argv = pasta_command(ports, "/run/p.pid", "/proc/7/ns/net", "/proc/7/ns/user", root=False)
    assert argv[:2] == ["pasta", "--config-net"]
    pairs = list(itertools.pairwise(argv))
    assert ("-t", "8080:5000") in pairs and ("-t", "9000-9001:7000-7001") in pairs
    assert ("-u", "127.0.0.1/5353:53") in pairs
    assert ("-T", "none") in pairs and ("-U", "none") in pairs and "--no-map-gw" in argv
    assert argv[-4:] == ["--userns", "/proc/7/ns/user", "--netns", "/proc/7/ns/net"]
    as_root = pasta_command(ports[:1], "/run/p.pid", "/proc/7/ns/net", None, root=True)
    assert ("--runas", "0") in list(itertools.pairwise(as_root)) and "--userns" not in as_root
    assert ("-u", "none") in list(itertools.pairwise(as_root))
