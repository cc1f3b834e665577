"""The recorders' shared writer (issue #21): many recorders' writes per worker-thread job."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from pbx.media import recorder as recorder_module
from pbx.media.recorder import BatchedWriter, CallRecorder
from pbx.media.wav import TELEPHONE_STEREO, WAV_HEADER_SIZE, build_wav_header

pytestmark = pytest.mark.asyncio


def wav_file(path: Path) -> int:
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.pwrite(fd, build_wav_header(TELEPHONE_STEREO, 0), 0)
    return fd


async def test_writes_queued_together_share_one_thread_job(tmp_path: Path) -> None:
    writer = BatchedWriter(asyncio.get_running_loop(), batch_seconds=0.01)
    fds = [wav_file(tmp_path / f"{i}.wav") for i in range(5)]
    try:
        await asyncio.gather(
            *(writer.append(fd, bytes([i]) * 8, WAV_HEADER_SIZE, 8) for i, fd in enumerate(fds))
        )
        assert writer.jobs == 1
        for i in range(5):
            data = (tmp_path / f"{i}.wav").read_bytes()
            assert data == build_wav_header(TELEPHONE_STEREO, 8) + bytes([i]) * 8
    finally:
        for fd in fds:
            os.close(fd)


async def test_a_write_queued_while_a_job_runs_goes_in_the_next_job(tmp_path: Path) -> None:
    writer = BatchedWriter(asyncio.get_running_loop(), batch_seconds=0.01)
    fd = wav_file(tmp_path / "a.wav")
    try:
        first = asyncio.ensure_future(writer.append(fd, b"\x01" * 4, WAV_HEADER_SIZE, 4))
        await asyncio.sleep(0.02)  # the first job has started
        await writer.append(fd, b"\x02" * 4, WAV_HEADER_SIZE + 4, 8)
        await first
        assert writer.jobs == 2
        data = (tmp_path / "a.wav").read_bytes()
        assert data == build_wav_header(TELEPHONE_STEREO, 8) + b"\x01" * 4 + b"\x02" * 4
    finally:
        os.close(fd)


async def test_a_failed_write_fails_only_its_own_recorder(tmp_path: Path) -> None:
    writer = BatchedWriter(asyncio.get_running_loop(), batch_seconds=0.01)
    fd = wav_file(tmp_path / "good.wav")
    bad = os.open(tmp_path / "bad.wav", os.O_RDONLY | os.O_CREAT, 0o600)  # not writable
    try:
        good_write = writer.append(fd, b"\x07" * 4, WAV_HEADER_SIZE, 4)
        results = await asyncio.gather(
            good_write, writer.append(bad, b"\x07" * 4, WAV_HEADER_SIZE, 4), return_exceptions=True
        )
        assert results[0] is None
        assert isinstance(results[1], OSError)
        assert writer.jobs == 1
        assert (tmp_path / "good.wav").read_bytes().endswith(b"\x07" * 4)
    finally:
        os.close(fd)
        os.close(bad)


async def test_the_recorders_of_a_loop_share_its_writer(tmp_path: Path) -> None:
    one = await CallRecorder.start(tmp_path, "one.wav")
    two = await CallRecorder.start(tmp_path, "two.wav")
    try:
        assert one._writer is two._writer is BatchedWriter.for_loop(asyncio.get_running_loop())
    finally:
        await one.close()
        await two.close()


async def test_a_recorder_keeps_its_own_schedule_however_long_its_writes_take(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Counted from the end of each write, the next flush drifted by the write's time and the
    batch's wait; recorders whose writes shared a batch then woke together (design 9.14)."""
    slow = recorder_module._append_all

    def slow_append_all(jobs: list[tuple[int, bytes, int, int]]) -> list[OSError | None]:
        time.sleep(0.03)  # a slow disk, in the worker thread
        return slow(jobs)

    monkeypatch.setattr(recorder_module, "_append_all", slow_append_all)
    loop = asyncio.get_running_loop()
    # No jitter allowance: every flush writes (its audio is final at once).
    recorder = await CallRecorder.start(tmp_path, "slow.wav", flush_seconds=0.2, jitter_seconds=0.0)
    flushed: list[float] = []
    enough = asyncio.Event()
    flush = recorder._flush

    async def timed_flush(horizon: int) -> None:
        flushed.append(loop.time())
        if len(flushed) == 6:
            enough.set()
        await flush(horizon)

    recorder._flush = timed_flush  # type: ignore[method-assign]
    try:
        async with asyncio.timeout(5):
            await enough.wait()
    finally:
        await recorder.close()
    mean = (flushed[5] - flushed[0]) / 5
    # On its schedule: 0.2 s apart. Counted from the end of each write (0.03 s, after the
    # batch's 0.05 s wait), they were 0.28 s apart.
    assert 0.18 <= mean < 0.24, flushed
