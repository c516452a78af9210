"""`unionfs`: mount and unmount union filesystems. The only module that parses argv, prints or exits."""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Sequence
from typing import NoReturn

from .config import MountConfig, apply_options, mounted_points, validate
from .errorlog import IoErrors
from .errors import USAGE_STATUS, UnionfsError
from .unmount import unmount

USAGE_ERROR = USAGE_STATUS

MOUNT_HELP = """\
options (-o, comma separated, as fuse-overlayfs and the kernel's overlayfs take them):
  lowerdir=A:B:C     read-only layers, top first (escape ':' and ',' in names with '\\')
  upperdir=DIR       writable layer; needs workdir (without both the mount is read-only)
  workdir=DIR        an empty directory on the upper's filesystem, for staging
  whiteout=auto|chardev|file
                     how deletions are recorded: a 0/0 character device (needs mknod) or an OCI
                     '.wh.NAME' file; auto picks chardev where allowed
  metacopy=on        chmod/chown/utimes/xattr changes copy metadata only, data on first write (the
                     upper then needs its lowers: not a standalone layer)
  fsync=0            sync nothing: copy-ups are not fsynced and fsync(2) on the mount returns at
                     once (for a throw-away upper, such as a build step's; unsafe on power loss)
  allow_other        let other users use the mount (needs user_allow_other in /etc/fuse.conf)
  uidmapping=C:H:L[:C:H:L...], gidmapping=...
                     show stored (image) ids C.. as H.. and store requests from H.. as C..
                     (the fuse-overlayfs form; unmapped ids show as 65534)
  squash_to_root, squash_to_uid=N, squash_to_gid=N
                     show every entry as owned by root (or N)
  ro                 read-only even with an upper
  timeout=SECONDS    kernel cache lifetime for entries and attributes
  fetcher=MODULE.CALLABLE, fetchspec=TEXT
                     lazy lowers: files carrying user.unionfs.fetch get their data from the
                     fetcher CALLABLE(TEXT) returns, on first open (unionfs/fetch.py)
"""


def die(message: str, status: int = USAGE_ERROR) -> None:
    print(f"unionfs: error: {message}", file=sys.stderr)
    sys.exit(status)


class UsageError(UnionfsError):
    """A command line argparse refused: one line, with the --help that shows the right usage."""

    exit_status = USAGE_STATUS


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError where it would print its usage block and exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def umount_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="unionfs umount", description="Unmount a union filesystem.")
    parser.add_argument("mountpoint")
    return parser


def mount_parser(prog: str) -> argparse.ArgumentParser:
    parser = Parser(
        prog=prog,
        description="Mount a union of directories: read-only lower layers under an optional writable upper.",
        epilog=MOUNT_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPTIONS")
    parser.add_argument("--lower", action="append", default=[], metavar="DIR", help="a lower layer (top first)")
    parser.add_argument("--upper", metavar="DIR")
    parser.add_argument("--work", metavar="DIR")
    parser.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    parser.add_argument("-d", "--debug", action="store_true", help="log every operation (implies -f)")
    parser.add_argument("--log", metavar="FILE", help="where a background daemon logs (default: nowhere)")
    parser.add_argument("--pidfile", metavar="FILE", help="write the daemon's pid here")
    parser.add_argument(
        "--error-file",
        metavar="FILE",
        help="append a line here for every request the daemon answered EIO because of a bug of its own",
    )
    parser.add_argument("--error-fd", type=int, metavar="N", help="as --error-file, to an open file descriptor")
    parser.add_argument(
        "--owner-fd",
        type=int,
        metavar="N",
        help="the read end of a pipe whose write end the mount's owner holds: unmount (as SIGTERM does) once it "
        "reads end of file, that is once the owner is gone",
    )
    parser.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    parser.add_argument("source", nargs="?", help=argparse.SUPPRESS)
    parser.add_argument("mountpoint")
    return parser


def config_from(args: argparse.Namespace) -> MountConfig:
    config = MountConfig(mountpoint=args.mountpoint)
    for options in args.options:
        apply_options(config, options)
    config.lowers.extend(args.lower)
    if args.upper is not None:
        config.upper = args.upper
    if args.work is not None:
        config.work = args.work
    config.debug = config.debug or args.debug
    return validate(config)


def setup_logging(args: argparse.Namespace, config: MountConfig) -> None:
    level = logging.DEBUG if config.debug else logging.INFO
    handler: logging.Handler = logging.FileHandler(args.log) if args.log else logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s unionfs[%(process)d] %(levelname)s %(message)s"))
    logger = logging.getLogger("unionfs")
    logger.addHandler(handler)
    logger.setLevel(level)


def run_daemon(args: argparse.Namespace, config: MountConfig) -> None:
    """Serve in this process; report readiness (or the failure) on --ready-fd when given."""
    from .mount import serve  # pyfuse3 is imported only by the process that serves

    setup_logging(args, config)

    def ready() -> None:
        if args.pidfile:
            with open(args.pidfile, "w", encoding="utf-8") as f:
                f.write(f"{os.getpid()}\n")
        if args.ready_fd is not None:
            os.write(args.ready_fd, b"ok\n")
            os.close(args.ready_fd)
            args.ready_fd = None

    try:
        serve(config, ready, args.owner_fd, IoErrors(args.error_file, args.error_fd))
    except UnionfsError as exc:  # (a fetcher= that cannot be loaded: what the parent waiting on --ready-fd says)
        if args.ready_fd is not None:
            os.write(args.ready_fd, str(exc).encode() + b"\n")
        die(str(exc), exc.exit_status)
    except (OSError, RuntimeError) as exc:
        message = f"cannot mount on '{config.mountpoint}': {exc}"
        if args.ready_fd is not None:
            os.write(args.ready_fd, message.encode() + b"\n")
        die(message, 1)


def spawn_daemon(argv: Sequence[str], args: argparse.Namespace) -> None:
    """Start the daemon in its own session and return once its mount is ready (or say why it is not)."""
    read_end, write_end = os.pipe()
    with open(args.log, "ab") if args.log else contextlib.nullcontext(subprocess.DEVNULL) as log:
        child = subprocess.Popen(
            [sys.executable, "-m", "unionfs", "mount", "-f", "--ready-fd", str(write_end), *argv],
            pass_fds=tuple(fd for fd in (write_end, args.owner_fd, args.error_fd) if fd is not None),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
        )
    os.close(write_end)
    with os.fdopen(read_end, "rb") as pipe:
        answer = pipe.read().decode(errors="replace").strip()
    if answer == "ok":
        return
    status = child.wait()
    die(
        answer or f"the daemon exited with status {status} before the mount was ready: run with -f --debug to see why",
        1,
    )


def owner_fd_problem(fd: int) -> str | None:
    """Why `fd` cannot be watched for its owner's end, or None: it must be open, a pipe, and its read end."""
    try:
        mode = os.fstat(fd).st_mode
        flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    except OSError:
        return f"--owner-fd {fd}: not an open file descriptor (give the read end of a pipe the owner holds open)"
    if not stat.S_ISFIFO(mode):
        return f"--owner-fd {fd}: not a pipe (give the read end of a pipe the owner holds open)"
    if flags & os.O_ACCMODE != os.O_RDONLY:
        return f"--owner-fd {fd}: not the read end of its pipe (the owner keeps the write end)"
    return None


def fd_writable(fd: int) -> bool:
    try:
        return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE in (os.O_WRONLY, os.O_RDWR)
    except OSError:
        return False


def cmd_mount(argv: Sequence[str], prog: str) -> None:
    args = mount_parser(prog).parse_args(argv)
    config = config_from(args)  # (a ConfigError ends in main, with its status)
    if args.owner_fd is not None:
        problem = owner_fd_problem(args.owner_fd)
        if problem is not None:
            die(problem)
    if args.error_fd is not None and not fd_writable(args.error_fd):
        die(f"--error-fd {args.error_fd}: not a file descriptor open for writing")
    if args.foreground or args.debug or args.ready_fd is not None:
        run_daemon(args, config)
    else:
        spawn_daemon(argv, args)


def cmd_umount(argv: Sequence[str]) -> None:
    args = umount_parser().parse_args(argv)
    point = os.path.realpath(args.mountpoint)
    if point not in mounted_points():
        die(f"'{args.mountpoint}' is not mounted: nothing to do")
    unmount(point)  # (an UnmountError ends in main, with its status)


def cmd_stress(argv: Sequence[str]) -> None:
    parser = Parser(prog="unionfs stress", description="Put a mount under load, checking results.")
    parser.add_argument("mountpoint")
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if not os.path.isdir(args.mountpoint) or not os.access(args.mountpoint, os.W_OK):
        die(f"'{args.mountpoint}' is not a writable directory: mount a union with an upper there first")
    from .stress import run

    results = run(args.mountpoint, args.processes, args.seconds, args.seed)
    errors = [e for r in results for e in r.errors]
    print(
        f"{sum(r.operations for r in results)} operations by {len(results)} processes in {args.seconds:g}s: "
        f"{len(errors)} error(s)"
    )
    for error in errors[:20]:
        print(f"  {error}")
    sys.exit(1 if errors else 0)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args and args[0] == "mount":
            cmd_mount(args[1:], "unionfs mount")
        elif args and args[0] in ("umount", "unmount"):
            cmd_umount(args[1:])
        elif args and args[0] == "stress":
            cmd_stress(args[1:])
        elif args and args[0].startswith("-") and args[0] not in ("-h", "--help"):
            cmd_mount(args, "unionfs")  # the fuse-overlayfs form that podman's and buildah's mount_program uses
        elif args and args[0] not in ("-h", "--help"):
            die(f"unknown command '{args[0]}': use mount, umount or stress (see 'unionfs --help')")
        elif args:
            print(
                "usage: unionfs mount -o lowerdir=A:B[,upperdir=U,workdir=W] MOUNTPOINT\n"
                "       unionfs umount MOUNTPOINT\n"
                "       unionfs -o OPTIONS MOUNTPOINT            (fuse-overlayfs form)\n"
                "Run 'unionfs mount --help' for the options."
            )
            sys.exit(0)
        else:
            die("no command: use mount, umount or stress (see 'unionfs --help')")
    except UnionfsError as exc:  # the package's one error root: one line and its exit status, no traceback
        die(str(exc), exc.exit_status)
