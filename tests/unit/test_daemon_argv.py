"""A daemon's command line, read back (unionfs.api.daemons): what `imagebuild check` knows of a mount's layers
and owner."""

from __future__ import annotations

from unionfs.api import _parse_daemon


def test_a_background_daemon_with_an_owner() -> None:
    argv = ["/usr/bin/python3", "-m", "unionfs", "mount", "-f", "--ready-fd", "5", "-o"]
    argv += [r"lowerdir=/s/l/a:/s/l/b\:c,upperdir=/s/u\,x,workdir=w,allow_other", "--pidfile", "/p", "--owner-fd"]
    argv += ["3", "mnt"]
    daemon = _parse_daemon(42, argv, "/cwd")
    assert daemon is not None
    assert (daemon.pid, daemon.mountpoint, daemon.owner_fd, daemon.serving) == (42, "/cwd/mnt", 3, True)
    assert daemon.lowers == ("/s/l/a", "/s/l/b:c") and daemon.upper == "/s/u,x" and daemon.work == "/cwd/w"


def test_the_command_that_starts_one_the_bare_form_and_other_commands() -> None:
    starter = _parse_daemon(1, ["python", "-m", "unionfs", "mount", "-olowerdir=/l", "/m"], "/")
    assert starter is not None and not starter.serving and starter.owner_fd is None and starter.lowers == ("/l",)
    bare = _parse_daemon(1, ["python", "/venv/bin/unionfs", "--lower", "/l", "--owner-fd=7", "-f", "/m"], "/")
    assert bare is not None and bare.serving and bare.owner_fd == 7 and bare.lowers == ("/l",)
    assert _parse_daemon(1, ["python", "-m", "unionfs", "umount", "/m"], "/") is None
    assert _parse_daemon(1, ["python", "-m", "imagebuild", "mount", "x", "/m"], "/") is None
