"""`run -t`: a pseudo-terminal for the container, as docker gives one, relayed to the caller's terminal.

The container's end is its stdin, stdout, stderr and controlling terminal (sandbox.spawn), shown in the
container at the same /dev/pts path (`tty` names it); this end copies output to our stdout and, with -i, our
stdin to it, with our terminal in raw mode so that keys (^C, ^Z) reach the container's line discipline, and
passes our window size on when it changes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import select
import signal
import subprocess
import termios
import tty
from types import FrameType


class Terminal:
    """A pty pair: `inside` for the container, `outside` for the relay."""

    def __init__(self) -> None:
        self.outside, self.inside = os.openpty()
        self.path = os.ttyname(self.inside)
        self.resize()

    def bwrap_options(self) -> list[str]:
        """The container's /dev/pts holds its terminal alone, at the path it has on the host: the fd the container
        was given lives on the host's devpts, which its own /dev/pts would not show."""
        return ["--tmpfs", "/dev/pts", "--dev-bind", self.path, self.path]

    def resize(self) -> None:
        """Give the container's terminal our window size (when we have a terminal)."""
        for fd in (0, 1, 2):
            if os.isatty(fd):
                with contextlib.suppress(OSError):
                    size = fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
                    fcntl.ioctl(self.outside, termios.TIOCSWINSZ, size)
                return

    def close(self) -> None:
        """Close what is still open of the pair (after the relay, nothing)."""
        for fd in (self.inside, self.outside):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self.inside = self.outside = -1

    def relay(self, child: subprocess.Popen[bytes], forward_input: bool) -> int:
        """Copy between our stdin/stdout and the container's terminal until the container is done."""
        os.close(self.inside)
        self.inside = -1
        raw = forward_input and os.isatty(0)
        saved = termios.tcgetattr(0) if raw else None

        def winch(_signum: int, _frame: FrameType | None) -> None:
            self.resize()

        previous = signal.signal(signal.SIGWINCH, winch)
        try:
            if raw:
                tty.setraw(0)
            sources = [self.outside, 0] if forward_input else [self.outside]
            while True:
                ready, _, _ = select.select(sources, [], [], 0.2)
                if self.outside in ready:
                    try:
                        data = os.read(self.outside, 65536)
                    except OSError as exc:
                        if exc.errno != errno.EIO:
                            raise
                        data = b""  # every container end closed
                    if not data:
                        break
                    _write_all(1, data)
                if 0 in ready:
                    data = os.read(0, 65536)
                    if data:
                        _write_all(self.outside, data)
                    else:
                        sources.remove(0)
                        _write_all(self.outside, b"\x04")  # end of input, as the line discipline reads ^D
                if not ready and child.poll() is not None:
                    break  # the container is done; what it left running does not hold us
            return child.wait()
        finally:
            if saved is not None:
                termios.tcsetattr(0, termios.TCSADRAIN, saved)
            signal.signal(signal.SIGWINCH, previous)
            self.close()


def _write_all(fd: int, data: bytes) -> None:
    while data:
        data = data[os.write(fd, data) :]
