"""`make check-fresh`: the README's promise to a newcomer, checked on clean Debian trees.

For each Debian release: a minimal tree from Debian's mirror (mmdebstrap --variant=minbase, with git, make and
sudo, which a newcomer has to clone and start; cached as a tarball between runs), no /etc/mtab, this machine's
CA certificates and pip settings copied in (a new machine on the same network has them: that is the site's
setup, not the project's), and the current commit cloned into it. Then, entered with a private mount and pid
namespace and pivot_root (a plain chroot forbids the user namespaces bubblewrap needs):

  as an ordinary user with sudo, then as root:
    make demo               ends with the app's page fetched; the install within 3 minutes; no silent minute
    imagebuild --help       in a new login shell
    the README's commands   in order, as printed (scripts/readme_walk.py), nothing left mounted or running
  with --test, as root:     make test

Usage (as root): python3 scripts/check_fresh.py [--release bookworm] [--release trixie] [--test] [--keep]
Exit status 0 when every check passed; one line per failed check otherwise.
"""

from __future__ import annotations

import argparse
import itertools
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CACHE = Path("/var/cache/imagebuild-check-fresh")
INCLUDE = "ca-certificates,git,make,sudo"
USER = "newcomer"
TUN = "/dev/net/tun"
INSTALL_LIMIT = 180.0  # seconds: the README's "about a minute" after the Debian packages, with room
SILENCE_LIMIT = 60.0  # seconds without a line of output
MARK = "@@check-fresh "  # the inner script's step markers

INNER = """\
set -u
export LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root
mark() {{ echo "{mark}$*"; }}
step() {{ name=$1; shift; mark "start $name"; "$@" 2>&1; mark "end $name $?"; }}
as_user() {{ su - {user} -c "$1"; }}
step user-demo as_user 'cd project && make demo'
step user-help as_user 'imagebuild --help >/dev/null && command -v imagebuild'
step user-walk as_user 'cd project && python3 scripts/readme_walk.py --login'
step root-demo sh -c 'cd /root/project && make demo'
step root-help bash -lc 'imagebuild --help >/dev/null && command -v imagebuild'
step root-walk sh -c 'cd /root/project && python3 scripts/readme_walk.py --login'
{test}
step leftovers sh -c '! grep " fuse" /proc/mounts'
"""


@dataclass
class Step:
    name: str
    started: float
    lines: list[tuple[float, str]] = field(default_factory=list)
    status: int | None = None
    ended: float = 0.0

    def silence(self) -> float:
        """The longest time without a line of output."""
        times = [self.started, *(t for t, _ in self.lines), self.ended]
        return max(b - a for a, b in itertools.pairwise(times)) if len(times) > 1 else 0.0

    def install_seconds(self) -> float | None:
        """From the step's start to the install's last line (`make demo` installs first)."""
        done = [t for t, line in self.lines if line.startswith("install [") and ": done:" in line]
        return done[0] - self.started if done else None


def run(*command: str, **kwargs: object) -> None:
    subprocess.run(command, check=True, **kwargs)  # type: ignore[call-overload]


def mirror() -> str:
    """The Debian mirror this machine's apt uses."""
    for source in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]:
        text = source.read_text(errors="replace") if source.is_file() else ""
        match = re.search(r"(?:URIs:|deb)\s+(\S+/debian)/?\s", text + "\n")
        if match:
            return match.group(1)
    return "http://deb.debian.org/debian"


def base_tarball(release: str, cache: Path) -> Path:
    tarball = cache / f"{release}.tar"
    if not tarball.exists():
        cache.mkdir(parents=True, exist_ok=True)
        print(f"check-fresh: making a minimal {release} tree with mmdebstrap (cached in {cache})", flush=True)
        partial = tarball.with_suffix(".partial.tar")
        run("mmdebstrap", "--quiet", "--variant=minbase", f"--include={INCLUDE}", release, str(partial), mirror())
        partial.rename(tarball)
    return tarball


def prepare(release: str, cache: Path, scratch: Path) -> Path:
    """A clean tree with the site's setup, a newcomer with sudo, and the current commit cloned for both."""
    tree = scratch / "root"
    tree.mkdir()
    run("tar", "-xf", str(base_tarball(release, cache)), "-C", str(tree), "--numeric-owner")
    (tree / "etc/mtab").unlink(missing_ok=True)
    bundle = Path("/etc/ssl/certs/ca-certificates.crt")
    if bundle.exists():  # the site's CAs: kept by update-ca-certificates when a package runs it again
        shutil.copy(bundle, tree / "usr/local/share/ca-certificates/site-bundle.crt")
        shutil.copy(bundle, tree / "etc/ssl/certs/ca-certificates.crt")
    (tree / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\ntimeout = 180\n")
    for name in ("resolv.conf", "hosts"):
        if Path("/etc", name).exists():
            shutil.copy(Path("/etc", name), tree / "etc" / name)
    run("chroot", str(tree), "useradd", "--create-home", "--shell", "/bin/bash", USER)
    (tree / f"etc/sudoers.d/{USER}").write_text(f"{USER} ALL=(ALL) NOPASSWD: ALL\n")
    os.chmod(tree / f"etc/sudoers.d/{USER}", 0o440)
    for home, owner in ((tree / "root", None), (tree / "home" / USER, USER)):
        run("git", "clone", "--quiet", str(REPO), str(home / "project"))
        if owner:
            run("chroot", str(tree), "chown", "-R", f"{owner}:{owner}", f"/home/{owner}/project")
    return tree


def enter(tree: Path, test: bool) -> subprocess.Popen[str]:
    """Run the checks inside the tree: private mount and pid namespaces, pivot_root, the host's /dev."""
    (tree / "check-fresh.sh").write_text(
        INNER.format(
            mark=MARK,
            user=USER,
            test="step root-test sh -c 'cd /root/project && make test'" if test else "",
        )
    )
    enter_script = f"""set -e
t={tree}
mount --bind "$t" "$t"
mount -t proc proc "$t/proc"
mount -t sysfs sysfs "$t/sys"
mount --rbind /dev "$t/dev"
cd "$t"
mkdir -p .old-root
pivot_root . .old-root
umount -l /.old-root
rmdir /.old-root
exec sh /check-fresh.sh
"""
    return subprocess.Popen(
        ["unshare", "--mount", "--pid", "--fork", "--propagation", "private", "sh", "-c", enter_script],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},  # a new machine's, not this one's
    )


def follow(process: subprocess.Popen[str], release: str, log: Path) -> list[Step]:
    """Echo the tree's output with the time, and cut it into steps."""
    steps: list[Step] = []
    current: Step | None = None
    started = time.monotonic()
    assert process.stdout is not None
    with log.open("w") as out:
        for line in process.stdout:
            now = time.monotonic()
            line = line.rstrip("\n")
            if line.startswith(MARK):
                word, name, *status = line.removeprefix(MARK).split()
                if word == "start":
                    current = Step(name, now)
                    steps.append(current)
                elif current is not None:
                    current.status, current.ended, current = int(status[0]), now, None
                continue
            stamped = f"[{release} {now - started:6.1f}s] {line}"
            print(stamped, flush=True)
            out.write(stamped + "\n")
            if current is not None:
                current.lines.append((now, line))
    process.wait()
    return steps


def verdicts(release: str, steps: list[Step], test: bool) -> list[str]:
    """One line per failed promise."""
    failures = []
    expected = ["user-demo", "user-help", "user-walk", "root-demo", "root-help", "root-walk"]
    expected += ["root-test"] if test else []
    expected.append("leftovers")
    seen = {step.name: step for step in steps}
    for name in expected:
        step = seen.get(name)
        if step is None:
            failures.append(f"{release}: {name} did not run")
        elif step.status != 0:
            failures.append(f"{release}: {name} exited {step.status}")
    for name in ("user-demo", "root-demo"):
        step = seen.get(name)
        if step is None:
            continue
        install = step.install_seconds()
        if install is None or install > INSTALL_LIMIT:
            failures.append(f"{release}: {name}: the install took {install or 0:.0f}s (limit {INSTALL_LIMIT:.0f}s)")
        if step.silence() > SILENCE_LIMIT:
            failures.append(f"{release}: {name}: {step.silence():.0f}s passed without a line of output")
        if not any("Hello from a layered image" in line for _, line in step.lines):
            failures.append(f"{release}: {name}: the demo did not print the app's page")
    return failures


def summary(release: str, steps: list[Step]) -> None:
    for step in steps:
        install = step.install_seconds()
        extra = f", install {install:.0f}s" if install is not None else ""
        print(
            f"check-fresh: {release} {step.name}: exit {step.status}, {step.ended - step.started:.0f}s, "
            f"longest silence {step.silence():.0f}s{extra}"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description="Check the README's commands on clean Debian trees.")
    parser.add_argument("--release", action="append", help="a Debian release (default: bookworm and trixie)")
    parser.add_argument("--cache", type=Path, default=CACHE, help=f"where base trees are kept (default {CACHE})")
    parser.add_argument("--test", action="store_true", help="also run make test in each tree, as root")
    parser.add_argument("--keep", action="store_true", help="keep the trees (their path is printed)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("check-fresh: needs root (it builds Debian trees and enters them): run it with sudo", file=sys.stderr)
        return 2
    if shutil.which("mmdebstrap") is None:
        print("check-fresh: mmdebstrap is missing: apt-get install mmdebstrap", file=sys.stderr)
        return 2
    failures = []
    fuse_mode = os.stat("/dev/fuse").st_mode & 0o7777
    os.chmod("/dev/fuse", 0o666)  # as Debian's udev sets it up; some containers start with 0600
    tun_mode = os.stat(TUN).st_mode & 0o7777 if os.path.exists(TUN) else None
    if tun_mode is not None:
        os.chmod(TUN, 0o666)  # likewise; the README's `run -p` uses it (pasta) as the ordinary user
    try:
        for release in args.release or ["bookworm", "trixie"]:
            scratch = Path(tempfile.mkdtemp(prefix=f"check-fresh-{release}-", dir="/var/tmp"))
            try:
                tree = prepare(release, args.cache, scratch)
                steps = follow(enter(tree, args.test), release, scratch / "log")
                summary(release, steps)
                failures += verdicts(release, steps, args.test)
            finally:
                if args.keep:
                    print(f"check-fresh: {release} tree kept in {scratch}")
                else:
                    shutil.rmtree(scratch, ignore_errors=True)
    finally:
        os.chmod("/dev/fuse", fuse_mode)
        if tun_mode is not None:
            os.chmod(TUN, tun_mode)
    for failure in failures:
        print(f"check-fresh: FAIL {failure}")
    print(f"check-fresh: {'all checks passed' if not failures else f'{len(failures)} check(s) failed'}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
