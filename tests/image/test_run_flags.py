"""`imagebuild run` with docker's everyday flags, as root: -p serves the demo app on the host through a network
namespace of its own (pasta), -v binds host paths, -w, -u, -e, --env-file and --entrypoint mean what docker
documents, and -it gives the shell a real terminal. Nothing is left running afterwards."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from tests.image.conftest import IMAGEBUILD, Tool, dockerfile
from tests.image.runtools import (
    fetch,
    free_port,
    listening,
    on_terminal,
    pastas,
    wait_for_nothing_left,
)

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO_PAGE = "Hello from a layered image"


@pytest.fixture(scope="module")
def demo(tool: Tool) -> str:
    tool.build(EXAMPLES / "app", "-t", "demo-app")
    return "demo-app"


@pytest.fixture(scope="module")
def pasta() -> None:
    if shutil.which("pasta") is None:
        pytest.skip("pasta is not installed (apt-get install passt)")


def mounted_rootfs(pid: int) -> bool:
    with open("/proc/self/mountinfo") as info:
        return any(f"imagebuild-rootfs-{pid}-" in line for line in info)


def start(tool: Tool, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*IMAGEBUILD, "--root", str(tool.root), "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
@pytest.mark.usefixtures("pasta")
def test_publish_serves_the_demo_app_on_the_host_port(tool: Tool, demo: str, how: int) -> None:
    port = 8080 if not listening(8080) else free_port()
    before = pastas()
    scratch = set(Path(tempfile.gettempdir()).glob("imagebuild-net-*"))
    app = start(tool, "--rm", "-p", f"{port}:5000", demo)
    try:
        assert DEMO_PAGE in fetch(f"http://127.0.0.1:{port}/", process=app)
        assert not listening(5000) or port == 5000  # the app's own port stays in its namespace
        app.send_signal(how)
        app.wait(30)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert wait_for_nothing_left(tool.root, before, port) == []
    assert not mounted_rootfs(app.pid)
    assert set(Path(tempfile.gettempdir()).glob("imagebuild-net-*")) <= scratch  # pasta's pid file went too


@pytest.mark.usefixtures("pasta")
def test_a_port_in_use_is_one_line_and_nothing_is_left(tool: Tool, demo: str) -> None:
    port = free_port()
    holder = subprocess.Popen(
        [sys.executable, "-c", f"import socket,time; s=socket.socket(); s.bind(('127.0.0.1',{port})); "
         "s.listen(); print('up', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"up\n"
        before = pastas()
        done = tool.run("run", "--rm", "-p", f"{port}:5000", demo, check=False)
        assert done.returncode != 0
        assert done.stderr.count("\n") == 1 and f"{port}/tcp is already in use" in done.stderr, done.stderr
        assert wait_for_nothing_left(tool.root, before) == []
    finally:
        holder.kill()
        holder.wait()


def test_network_none_has_only_loopback_and_host_keeps_the_host_network(tool: Tool) -> None:
    none = tool.run("run", "--rm", "--network", "none", "busybox", "cat", "/proc/net/dev").stdout
    assert [line.split(":")[0].strip() for line in none.splitlines()[2:]] == ["lo"]
    host = tool.run("run", "--rm", "--network", "host", "busybox", "cat", "/proc/net/dev").stdout
    with open("/proc/net/dev") as f:
        assert len(host.splitlines()) == len(f.read().splitlines())


def test_volumes_show_host_files_and_ro_refuses_writes(tool: Tool, tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    (share / "from-host.txt").write_text("made on the host\n")
    config = tmp_path / "app.conf"
    config.write_text("setting=1\n")
    shown = tool.run(
        "run", "--name", "binds", "-v", f"{share}:/srv/share", "-v", f"{config}:/etc/app.conf:ro", "busybox",
        "sh", "-c", "cat /srv/share/from-host.txt /etc/app.conf; echo written > /srv/share/from-container.txt; "
        "echo changed > /etc/app.conf || echo REFUSED",
    ).stdout  # fmt: skip
    assert shown.splitlines()[:2] == ["made on the host", "setting=1"]
    assert "REFUSED" in shown
    assert (share / "from-container.txt").read_text() == "written\n"
    assert config.read_text() == "setting=1\n"
    upper = tool.root / "containers" / "binds" / "upper"
    recorded = [str(p.relative_to(upper)) for p in upper.rglob("*")]
    assert not [p for p in recorded if "from-" in p or (p.endswith("app.conf") and (upper / p).stat().st_size)]
    # a USER reads what the bind shows, though it may not pass the host directories above it (pytest's are 0700),
    # as under docker, whose daemon binds as root
    os.chmod(tmp_path, 0o700)
    as_user = tool.run("run", "--rm", "-u", "4242", "-v", f"{share}:/srv:ro", "busybox", "cat", "/srv/from-host.txt")
    assert as_user.stdout == "made on the host\n"
    ro = tool.run("run", "--rm", "-v", f"{share}:/data:ro", "busybox", "touch", "/data/x", check=False)
    assert ro.returncode != 0 and "Read-only file system" in ro.stderr
    missing = tool.run("run", "--rm", "-v", f"{tmp_path}/absent:/data", "busybox", "true", check=False)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "does not exist" in missing.stderr


IDS = (
    "FROM busybox\n"
    "RUN mkdir -p /etc && printf 'root:x:0:0:root:/root:/bin/sh\\nweb:x:1000:1001:web:/home/web:/bin/sh\\n'"
    " > /etc/passwd && printf 'root:x:0:\\nstaff:x:50:\\nweb:x:1001:\\n' > /etc/group\n"
    'ENTRYPOINT ["echo", "entry"]\n'
    'CMD ["from-cmd"]\n'
    "WORKDIR /srv\n"
    "ENV FROM_IMAGE=image\n"
)


@pytest.fixture(scope="module")
def ids(tool: Tool, tmp_path_factory: pytest.TempPathFactory) -> str:
    tool.build(dockerfile(tmp_path_factory.mktemp("ids"), IDS), "-t", "run-ids")
    return "run-ids"


def test_workdir_user_env_and_entrypoint_mean_what_docker_says(tool: Tool, ids: str, tmp_path: Path) -> None:
    def run(*args: str, env: dict[str, str] | None = None) -> str:
        return tool.run("run", "--rm", *args, env=env).stdout

    # ENTRYPOINT with CMD, arguments replacing CMD, --entrypoint dropping both, --entrypoint "" keeping CMD
    assert run(ids) == "entry from-cmd\n"
    assert run(ids, "args") == "entry args\n"
    assert run("--entrypoint", "pwd", ids) == "/srv\n"
    assert run("--entrypoint", "", ids, "echo", "no", "entrypoint") == "no entrypoint\n"
    # -w: made when missing, relative refused
    assert run("-w", "/new/dir", "--entrypoint", "pwd", ids) == "/new/dir\n"
    relative = tool.run("run", "--rm", "-w", "rel", ids, check=False)
    assert relative.returncode == 1 and "must be an absolute path" in relative.stderr
    # -u: a name (its passwd group and home), name:group, a uid not in passwd (group 0, home /)
    script = ["--entrypoint", "sh", ids, "-c", 'echo "$(id -u):$(id -g) $HOME"']
    assert run(*script) == "0:0 /root\n"
    assert run("-u", "web", *script) == "1000:1001 /home/web\n"
    assert run("-u", "web:staff", *script) == "1000:50 /home/web\n"
    assert run("-u", "4242", *script) == "4242:0 /\n"
    unknown = tool.run("run", "--rm", "-u", "nobody", ids, check=False)
    assert unknown.returncode == 1 and "user 'nobody' is not in the image's /etc/passwd" in unknown.stderr
    # -e VAR=VALUE, -e VAR (the caller's; left out when the caller has none), --env-file, later wins
    env_file = tmp_path / "app.env"
    env_file.write_text("# settings\nFROM_FILE=file value\nOVERRIDDEN=file\nFROM_CALLER_VIA_FILE\n")
    shown = run(
        "--env-file", str(env_file), "-e", "OVERRIDDEN=flag", "-e", "CALLER", "-e", "UNSET_HERE",
        "--entrypoint", "env", ids,
        env={"CALLER": "from caller", "FROM_CALLER_VIA_FILE": "via file"},
    )  # fmt: skip
    env = dict(line.split("=", 1) for line in shown.splitlines())
    assert env["FROM_IMAGE"] == "image" and env["FROM_FILE"] == "file value" and env["OVERRIDDEN"] == "flag"
    assert env["CALLER"] == "from caller" and env["FROM_CALLER_VIA_FILE"] == "via file"
    assert "UNSET_HERE" not in env and env["HOME"] == "/root" and env["PATH"]
    bad = tmp_path / "bad.env"
    bad.write_text("GOOD=1\nBAD NAME=2\n")
    refused = tool.run("run", "--rm", "--env-file", str(bad), ids, check=False)
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "bad.env:2" in refused.stderr


def test_it_gives_the_shell_a_terminal_with_job_control_and_the_window_size(tool: Tool) -> None:
    script = b"tty; stty size; sleep 30 & jobs; kill %1; echo term=$TERM; exit 7\n"
    argv = [*IMAGEBUILD, "--root", str(tool.root), "run", "--rm", "-it", "busybox", "sh"]
    shown, status = on_terminal(argv, script, 37, 111, dict(os.environ))
    lines = [line.strip() for line in shown.splitlines()]
    assert status == 7, shown
    assert any(line.startswith("/dev/pts/") for line in lines), shown
    assert "37 111" in lines, shown
    assert any("Running" in line and "sleep 30" in line for line in lines), shown  # job control
    assert "term=xterm" in lines, shown
    without = tool.run("run", "--rm", "busybox", "sh", "-c", "tty || true").stdout
    assert without.strip() == "not a tty"


def test_i_attaches_stdin_and_it_needs_a_terminal(tool: Tool) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*IMAGEBUILD, "--root", str(tool.root), "run", "--rm", *args],
            input="piped in\n", capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    assert run("-i", "busybox", "cat").stdout == "piped in\n"
    assert run("busybox", "cat").stdout == ""  # without -i, as docker: no input
    refused = run("-it", "busybox", "cat")
    assert refused.returncode == 1 and refused.stderr.count("\n") == 1 and "not a terminal" in refused.stderr
