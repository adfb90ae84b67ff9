"""The device primitives over host memory (``transports/device_host.py``): the stand-in CI
runs the device protocol on, so its semantics must be CUDA's: streams run their work in
order and asynchronously, an event wait waits for the most recent record made before it
(also across processes, through an opened handle), memory opens through its handle in
another process, reductions run in the buffers' own dtype."""

from __future__ import annotations

import multiprocessing
import threading

import ml_dtypes
import numpy as np
import pytest

from collectives import ReduceOp
from collectives.errors import TransportError
from collectives.ops import finalize, reduce_pair
from collectives.transports.device_host import HostDevice
from collectives.transports.device_memory import HANDLE_BYTES, Span


@pytest.fixture
def device():
    d = HostDevice()
    yield d
    d.shutdown()


def _fill(device: HostDevice, span: Span, values: np.ndarray) -> None:
    device.synchronize(device.stream)
    span.memory[span.offset : span.offset + span.nbytes] = values.view(np.uint8)


def _read(device: HostDevice, span: Span, dtype) -> np.ndarray:
    device.synchronize(device.stream)
    return span.memory[span.offset : span.offset + span.nbytes].view(dtype).copy()


def test_a_stream_runs_its_work_in_order_after_the_call_returns(device):
    gate = threading.Event()
    a = device.allocate(64)
    b = device.allocate(64)
    _fill(device, a, np.arange(16, dtype=np.int32))
    device.stream.submit(lambda: gate.wait(5))
    device.copy(b, a, device.stream)  # queued behind the gate
    assert not _peek(b).any(), "the copy ran before the work queued ahead of it"
    gate.set()
    np.testing.assert_array_equal(_read(device, b, np.int32), np.arange(16, dtype=np.int32))
    device.free(a)
    device.free(b)


def _peek(span: Span) -> np.ndarray:
    return span.memory[span.offset : span.offset + span.nbytes]


def test_an_event_wait_holds_the_waiting_stream_until_the_record_is_reached():
    producer, consumer = HostDevice(0), HostDevice(1)
    try:
        gate = threading.Event()
        src, dst = producer.allocate(32), consumer.allocate(32)
        _fill(producer, src, np.full(8, 7, dtype=np.int32))
        event = producer.event()
        theirs = consumer.open_event(producer.export_event(event), owner=0)
        producer.stream.submit(lambda: gate.wait(5))
        producer.record(event, producer.stream)
        consumer.wait(consumer.stream, theirs)
        consumer.copy(dst, src, consumer.stream)
        threading.Event().wait(0.05)
        assert not _peek(dst).any(), "the consumer ran past an event that was not reached"
        gate.set()
        np.testing.assert_array_equal(_read(consumer, dst, np.int32), np.full(8, 7, dtype=np.int32))
        consumer.destroy_event(theirs)
        producer.destroy_event(event)
    finally:
        producer.shutdown()
        consumer.shutdown()


def test_waiting_on_an_event_never_recorded_does_not_wait(device):
    event = device.event()
    device.wait(device.stream, event)
    device.synchronize(device.stream)
    device.destroy_event(event)


def _child(handle: bytes, event_handle: bytes, nbytes: int, done) -> None:
    child = HostDevice(1)
    try:
        span = child.open(handle, nbytes, owner=0)
        event = child.open_event(event_handle, owner=0)
        child.wait(child.stream, event)  # the parent recorded after its (slow) fill
        child.synchronize(child.stream)
        got = span.memory[:nbytes].view(np.float64).copy()
        span.memory[:nbytes] = (got * 2).view(np.uint8)
        done.send(got.tolist())
    finally:
        child.shutdown()


@pytest.mark.multiprocess
def test_memory_and_events_open_through_their_handles_in_another_process(device):
    nbytes = 8 * 64
    span = device.allocate(nbytes)
    handle = device.export(span)
    event = device.event()
    assert len(handle) == HANDLE_BYTES and len(device.export_event(event)) == HANDLE_BYTES
    values = np.arange(64, dtype=np.float64)
    gate = threading.Event()
    device.stream.submit(lambda: gate.wait(5))
    device.stream.submit(lambda: np.copyto(span.memory[:nbytes], values.view(np.uint8)))
    device.record(event, device.stream)
    ctx = multiprocessing.get_context("fork")
    mine, theirs = ctx.Pipe()
    child = ctx.Process(target=_child, args=(handle, device.export_event(event), nbytes, theirs))
    child.start()
    gate.set()
    assert mine.poll(20), "the child did not report"
    assert mine.recv() == values.tolist()
    child.join(10)
    assert child.exitcode == 0
    np.testing.assert_array_equal(_read(device, span, np.float64), values * 2)  # its writes are ours to see
    device.unexport(span)
    device.free(span)
    device.destroy_event(event)


DTYPES = [np.float16, ml_dtypes.bfloat16, np.float32, np.float64, np.int8, np.int32, np.int64, np.uint8]


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("op", [ReduceOp.SUM, ReduceOp.PROD, ReduceOp.MIN, ReduceOp.MAX, ReduceOp.AVG])
def test_reduce_and_average_run_in_the_buffers_own_dtype(device, dtype, op):
    dtype = np.dtype(dtype)
    rng = np.random.default_rng(1)
    a = (rng.standard_normal(33) * 5).astype(dtype)
    b = (rng.standard_normal(33) * 5).astype(dtype)
    sa, sb, out = (device.allocate(a.nbytes) for _ in range(3))
    _fill(device, sa, a)
    _fill(device, sb, b)
    device.reduce(op, dtype, out, sa, sb, device.stream)
    if op is ReduceOp.AVG:
        device.average(dtype, out, 3, device.stream)
    want = np.empty_like(a)
    reduce_pair(op, a, b, want)
    finalize(op, want, 3)
    assert _read(device, out, dtype).tobytes() == want.tobytes()


def test_a_span_refuses_bytes_outside_it(device):
    span = device.allocate(16)
    assert span.sub(8, 8).offset == 8
    with pytest.raises(ValueError, match="outside a span of 16 bytes"):
        span.sub(8, 9)
    device.free(span)


def test_a_failed_step_fails_the_stream_and_says_so(device):
    def boom() -> None:
        raise RuntimeError("planted")

    device.stream.submit(boom)
    with pytest.raises(TransportError, match="planted"):
        device.synchronize(device.stream)
