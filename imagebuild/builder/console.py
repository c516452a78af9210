"""A build's output when stages run at the same time: each step's lines stay one block under its header.

One step at a time is live: its lines reach the stream as they come (a long RUN shows its progress). A step that
starts while another is live keeps its lines until it can print them whole: when the live step ends, the blocks
of the steps that ended meanwhile are printed (in the order they ended), then the oldest step still running
prints what it has so far and becomes live. A serial build (one stage at a time) therefore prints exactly as
before, line by line; a parallel one prints whole blocks, never two steps' lines mixed.
"""

from __future__ import annotations

import threading
from typing import Protocol


class Stream(Protocol):
    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class Console:
    """Blocks of step output to one stream; thread-safe."""

    def __init__(self, out: Stream) -> None:
        self._out = out
        self._lock = threading.Lock()
        self._live: Block | None = None
        self._running: list[Block] = []  # started while another was live: buffered, oldest first
        self._ended: list[Block] = []  # ended while another was live: printed when it ends

    def block(self) -> Block:
        block = Block(self)
        with self._lock:
            if self._live is None:
                self._live = block
            else:
                self._running.append(block)
        return block

    def say(self, text: str) -> None:
        """A line of its own (a block that starts and ends at once)."""
        block = self.block()
        block.write(text + "\n")
        block.end()

    def _write(self, block: Block, text: str) -> None:
        with self._lock:
            if block is self._live:
                self._emit(text)
            else:
                block.lines.append(text)

    def _end(self, block: Block) -> None:
        with self._lock:
            if block is not self._live:
                self._running.remove(block)
                self._ended.append(block)
                return
            self._live = None
            for done in self._ended:
                self._emit(*done.lines)
            self._ended.clear()
            if self._running:
                self._live = self._running.pop(0)
                self._emit(*self._live.lines)
                self._live.lines.clear()

    def _emit(self, *texts: str) -> None:
        for text in texts:
            self._out.write(text)
        self._out.flush()


class Block:
    """One step's output."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self.lines: list[str] = []
        self.ended = False

    def write(self, text: str) -> None:
        self._console._write(self, text)

    def end(self) -> None:
        if not self.ended:
            self.ended = True
            self._console._end(self)


class StageOutput:
    """What one stage's steps write: a new block for each step (`step`), a stream to them otherwise."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._block: Block | None = None

    def step(self) -> None:
        self.close()
        self._block = self._console.block()

    def write(self, text: str, /) -> int:
        if self._block is None:
            self.step()
        assert self._block is not None
        self._block.write(text)
        return len(text)

    def flush(self) -> None:
        pass  # a block reaches the stream when the console lets it

    def close(self) -> None:
        if self._block is not None:
            self._block.end()
            self._block = None
