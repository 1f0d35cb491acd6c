"""Streaming a batched `generate`: each row's new text goes to its own request's queue."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from services.serving.generation import Job, cut_at_stop


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """How many characters at the end of `text` could begin a stop string (0: none)."""
    longest = 0
    for stop in stops:
        for size in range(min(len(stop) - 1, len(text)), longest, -1):
            if text.endswith(stop[:size]):
                longest = size
                break
    return longest


class RowStreamer:
    """A `generate` streamer for a whole batch: hands each row's new text to that row's queue."""

    def __init__(self, tokenizer: Any, jobs: list[Job], loop: asyncio.AbstractEventLoop, stops: set[int]):
        self.tokenizer = tokenizer
        self.jobs = jobs
        self.loop = loop
        self.stops = stops
        self.tokens: list[list[int]] = [[] for _ in jobs]
        self.sent = [""] * len(jobs)
        self.finished = [job.stream is None for job in jobs]
        self.prompt_seen = False

    def put(self, value: Any) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True  # the first call hands over the prompts
            return
        columns = value.reshape(len(self.jobs), -1).tolist()
        for row, new in enumerate(columns):
            if self.finished[row]:
                continue
            job = self.jobs[row]
            for token in new:
                if token in self.stops or len(self.tokens[row]) >= job.sampling.max_tokens:
                    self._finish(row)
                    break
                self.tokens[row].append(token)
            if self.finished[row]:
                continue
            text = self.tokenizer.decode(self.tokens[row], skip_special_tokens=True)
            text, stopped = cut_at_stop(text, job.sampling.stop)
            if text.endswith("\ufffd") and not stopped:
                continue  # a multi-byte character is not complete yet
            if not stopped:  # text that may be the start of a stop string waits for the next token
                text = text[: len(text) - held_back(text, job.sampling.stop)]
            self._send(row, text)
            if stopped:
                self._finish(row)

    def _send(self, row: int, text: str) -> None:
        delta = text[len(self.sent[row]) :] if text.startswith(self.sent[row]) else ""
        if delta:
            self.sent[row] = text
            queue = self.jobs[row].stream
            assert queue is not None
            self.loop.call_soon_threadsafe(queue.put_nowait, delta)

    def _finish(self, row: int) -> None:
        self.finished[row] = True

    def end(self) -> None:
        for row in range(len(self.jobs)):
            self.finished[row] = True


class FirstTokenQueue(asyncio.Queue[str | None]):
    """A streamed answer's deltas, noting when the first one arrived (its time to first token)."""

    def __init__(self) -> None:
        super().__init__()
        self.first_at: float | None = None

    def put_nowait(self, item: str | None) -> None:
        if item and self.first_at is None:
            self.first_at = time.perf_counter()
        super().put_nowait(item)
