"""`imagebuild run` with docker's flags as an ordinary user, as rootless podman runs them: -p serves the demo app
on the host through pasta from a network namespace of the container's own (with the user's subordinate ids,
and without them), -v binds the user's files, -it gives the shell a real terminal. Nothing is left running."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.image.runtools import fetch, free_port, listening, on_terminal, pastas, wait_for_nothing_left
from tests.rootless.conftest import TUN, User, busybox_context, own_tree

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
DEMO_PAGE = "Hello from a layered image"
NO_RANGE_USER = "imagebuild-norange"


def as_user(user: User, *args: str) -> list[str]:
    return [
        "setpriv",
        f"--reuid={user.uid}",
        f"--regid={user.gid}",
        "--init-groups",
        "--inh-caps=-all",
        "--",
        user.python,
        "-m",
        "imagebuild",
        *args,
    ]


class Store:
    def __init__(self, user: User, root: Path) -> None:
        self.user = user
        self.root = root

    def argv(self, *args: str) -> list[str]:
        return as_user(self.user, "--root", str(self.root), *args)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            self.argv(*args), capture_output=True, text=True, timeout=300, env=self.user.env(), cwd=self.user.base
        )
        if check and done.returncode != 0:
            raise AssertionError(f"imagebuild {args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return done

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.user.env(), cwd=self.user.base
        )


def needs() -> None:
    busybox = shutil.which("busybox") or "/bin/busybox"
    for tool in ("bwrap", "newuidmap", "pasta"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (bubblewrap, uidmap, passt)")
    if not os.path.exists(busybox):
        pytest.skip("needs busybox-static")


def make_store(user: User, workspace: Path) -> Store:
    needs()
    base = busybox_context(workspace, shutil.which("busybox") or "/bin/busybox")
    app = workspace / "app"
    shutil.copytree(EXAMPLES / "app", app)
    own_tree(workspace, user)
    store = Store(user, workspace / "store")
    store.run("build", "-t", "busybox:1.35", str(base))
    store.run("build", "-t", "demo-app", str(app))
    return store


@pytest.fixture
def store(user: User, workspace: Path) -> Store:
    return make_store(user, workspace)


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["stopped", "killed"])
def test_publish_serves_the_demo_app_as_an_ordinary_user(store: Store, how: int) -> None:
    port = 8080 if not listening(8080) else free_port()
    before = pastas()
    app = store.start("run", "--rm", "-p", f"{port}:5000", "demo-app")
    try:
        assert DEMO_PAGE in fetch(f"http://127.0.0.1:{port}/", process=app), app.stderr
        app.send_signal(how)
        app.wait(30)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    try:
        assert wait_for_nothing_left(store.root, before, port) == []
    finally:  # what a killed run cannot remove itself (`imagebuild check` names it): its empty rootfs dir, the
        # copies of the host's name files
        for left in Path(tempfile.gettempdir()).glob(f"imagebuild-*-{app.pid}-*"):
            if not any(left.glob("rootfs/*")):
                shutil.rmtree(left, ignore_errors=True)


def test_volumes_bind_the_users_files(store: Store, workspace: Path, user: User) -> None:
    share = workspace / "share"
    share.mkdir()
    (share / "from-host.txt").write_text("the user's file\n")
    own_tree(share, user)
    shown = store.run(
        "run", "--rm", "-v", f"{share}:/srv/share", "busybox:1.35", "sh", "-c",
        "cat /srv/share/from-host.txt; echo back > /srv/share/from-container.txt",
    ).stdout  # fmt: skip
    assert shown == "the user's file\n"
    made = share / "from-container.txt"
    assert made.read_text() == "back\n" and made.stat().st_uid == user.uid  # the container's root is the user
    ro = store.run("run", "--rm", "-v", f"{share}:/data:ro", "busybox:1.35", "touch", "/data/x", check=False)
    assert ro.returncode != 0 and "Read-only file system" in ro.stderr
    # the demo app's USER 1000 (one of the user's subordinate ids) reads the bind below a directory only the
    # user may pass: the container's root binds it, as podman's runtime does
    private = workspace / "private"
    (private / "www").mkdir(parents=True)
    (private / "www" / "index.html").write_text("the user's page\n")
    own_tree(private, user)
    private.chmod(0o700)
    page = store.run("run", "--rm", "-v", f"{private / 'www'}:/app/www:ro", "demo-app", "cat", "/app/www/index.html")
    assert page.stdout == "the user's page\n"


def test_it_gives_the_users_shell_a_terminal(store: Store, user: User) -> None:
    script = b"tty; stty size; sleep 30 & jobs; kill %1; id -u; exit 5\n"
    shown, status = on_terminal(
        store.argv("run", "--rm", "-it", "busybox:1.35", "sh"), script, 24, 91, user.env(), str(user.base)
    )
    lines = [line.strip() for line in shown.splitlines()]
    assert status == 5, shown
    assert any(line.startswith("/dev/pts/") for line in lines) and "24 91" in lines, shown
    assert any("Running" in line and "sleep 30" in line for line in lines), shown


def test_what_pasta_needs_is_one_line_and_nothing_is_left(store: Store) -> None:
    low = store.run("run", "--rm", "-p", "80:5000", "demo-app", check=False)
    assert low.returncode == 1 and low.stderr.count("\n") == 1, low.stderr
    assert "an ordinary user may not bind port 80: publish port" in low.stderr
    before = pastas()
    mode = os.stat(TUN).st_mode & 0o7777
    os.chmod(TUN, 0o600)  # as some containers start: pasta, as the user, cannot open it
    try:
        done = store.run("run", "--rm", "-p", f"{free_port()}:5000", "demo-app", check=False)
    finally:
        os.chmod(TUN, mode)
    assert done.returncode == 1 and done.stderr.count("\n") == 1, done.stderr
    assert "pasta cannot open /dev/net/tun" in done.stderr and "chmod 0666 /dev/net/tun" in done.stderr
    assert wait_for_nothing_left(store.root, before) == []


@pytest.fixture
def no_range_user(user: User, workspace: Path) -> Iterator[User]:
    try:
        pwd.getpwnam(NO_RANGE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", NO_RANGE_USER])
    entry = pwd.getpwnam(NO_RANGE_USER)
    for table in ("/etc/subuid", "/etc/subgid"):
        lines = Path(table).read_text().splitlines() if os.path.exists(table) else []
        if any(line.split(":")[0] in (NO_RANGE_USER, str(entry.pw_uid)) for line in lines):
            pytest.skip(f"{NO_RANGE_USER} has a subordinate range in {table}")
    yield User(NO_RANGE_USER, entry.pw_uid, entry.pw_gid, user.python, user.pythonpath, workspace)


def test_publish_works_without_subordinate_ids(no_range_user: User, workspace: Path) -> None:
    store = make_store(no_range_user, workspace)
    port = free_port()
    before = pastas()
    app = store.start("run", "--rm", "-p", f"127.0.0.1:{port}:5000", "demo-app")
    try:
        assert DEMO_PAGE in fetch(f"http://127.0.0.1:{port}/", process=app)
        app.send_signal(signal.SIGTERM)
        app.wait(30)
    finally:
        if app.poll() is None:
            app.kill()
            app.wait()
    assert wait_for_nothing_left(store.root, before, port) == []
