"""RawLedger framing: byte-identical to protobuf's own encoder, parsing of what
protobuf writes (any order, unknown fields), strict errors, buffers released,
and (hypothesis) exact agreement of the compiled and pure twins."""

from __future__ import annotations

import array
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from stellar_live_source.core import _backend

from .conftest import outcome

SEQUENCES = [0, 1, 127, 128, 2**32 - 1]
LENGTHS = [0, 1, 127, 128, 16384, 2 * 1024 * 1024]
PAYLOAD = random.Random(20250801).randbytes(max(LENGTHS) + 7)


@pytest.fixture(scope="module")
def pb():
    """RawLedger, plus a wider message whose extra fields RawLedger sees as unknown."""
    pytest.importorskip("google.protobuf", reason="protobuf is needed to compare with its encoder")
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    proto = descriptor_pb2.FileDescriptorProto(name="raw_ledger_test.proto", package="sls_test", syntax="proto3")
    known = [(1, "sequence", field.TYPE_UINT32), (2, "ledger_close_meta_xdr", field.TYPE_BYTES)]
    unknown = [
        (number, f"f{number}", kind)
        for number, kind in [
            (3, field.TYPE_INT64),  # wire type 0
            (4, field.TYPE_FIXED64),  # 1
            (5, field.TYPE_FIXED32),  # 5
            (6, field.TYPE_STRING),  # 2
            (7, field.TYPE_UINT64),
            (900000, field.TYPE_BYTES),  # a 4-byte tag
        ]
    ]
    for name, fields in (("RawLedger", known), ("Wider", known + unknown)):
        message = proto.message_type.add(name=name)
        for number, fname, kind in fields:
            message.field.add(name=fname, number=number, type=kind, label=field.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    cls = message_factory.GetMessageClass
    return cls(pool.FindMessageTypeByName("sls_test.RawLedger")), cls(pool.FindMessageTypeByName("sls_test.Wider"))


def test_backend_selected():
    from stellar_live_source.core import frame

    assert frame._impl.__name__.endswith("_c" if _backend.COMPILED_EXPECTED else "_py")
    assert frame.raw_ledger_frame is frame._impl.raw_ledger_frame


@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("sequence", SEQUENCES)
def test_matches_protobuf(twin, pb, sequence, length):
    raw_ledger, _ = pb
    ledger = PAYLOAD[5 : 5 + length]
    expected = raw_ledger(sequence=sequence, ledger_close_meta_xdr=ledger).SerializeToString()
    frame = twin.frame.raw_ledger_frame(sequence, PAYLOAD, 5, length)
    assert type(frame) is bytes and frame == expected
    assert twin.frame.parse_raw_ledger(frame) == (sequence, ledger)
    assert twin.frame.raw_ledger_frames(PAYLOAD, [sequence, 7], [5, 0], [length, 3]) == [
        expected,
        raw_ledger(sequence=7, ledger_close_meta_xdr=PAYLOAD[:3]).SerializeToString(),
    ]


@pytest.mark.parametrize(
    "make_buf",
    [
        bytes,
        bytearray,
        lambda b: memoryview(b"junk" + b)[4:],  # offsets are relative to the view
        lambda b: array.array("I", b),  # any element format: offsets count bytes
        lambda b: memoryview(b).cast("B", (2, 8)),  # C-contiguous 2-D
    ],
)
def test_buffer_kinds(twin, make_buf):
    data = bytes(range(16))
    buf = make_buf(data)
    assert twin.frame.raw_ledger_frame(300, buf, 3, 9) == b"\x08\xac\x02\x12\x09" + data[3:12]
    assert twin.frame.raw_ledger_frames(buf, (1,), (0,), (16,)) == [b"\x08\x01\x12\x10" + data]


def test_buffer_released(twin):
    buf, bad = bytearray(b"\x08\x01\x12\x02ab"), bytearray(b"\x08")
    assert twin.frame.raw_ledger_frame(1, buf, 4, 2) == bytes(buf)
    assert twin.frame.raw_ledger_frames(buf, [1], [4], [2]) == [bytes(buf)]
    assert twin.frame.parse_raw_ledger(buf) == (1, b"ab")
    for call in (
        lambda: twin.frame.raw_ledger_frame(1, buf, 4, 3),
        lambda: twin.frame.raw_ledger_frames(buf, [1, 2], [0, 9], [1, 1]),
        lambda: twin.frame.parse_raw_ledger(bad),
    ):
        with pytest.raises(ValueError):
            call()
    buf.extend(b"g")  # BufferError here if any call above leaked its export
    bad.extend(b"g")


@pytest.mark.parametrize(
    "args, error, message",
    [
        ((-1, b"ab", 0, 1), ValueError, "sequence must be an int in 0..4294967295, got -1"),
        ((2**32, b"ab", 0, 1), ValueError, "sequence must be an int in 0..4294967295, got 4294967296"),
        ((1.0, b"ab", 0, 1), ValueError, "sequence must be an int in 0..4294967295, got 1.0"),
        ((1, b"ab", -1, 1), ValueError, "offset must be an int >= 0, got -1"),
        ((1, b"ab", 0, -(2**70)), ValueError, f"length must be an int >= 0, got {-(2**70)}"),
        ((1, b"ab", 0, "1"), ValueError, "length must be an int >= 0, got '1'"),
        ((1, b"ab", 1, 2), ValueError, "offset 1 + length 2 exceeds the 2-byte buffer"),
        ((1, b"ab", 3, 0), ValueError, "offset 3 + length 0 exceeds the 2-byte buffer"),
        ((1, b"ab", 2**63, 1), ValueError, f"offset {2**63} + length 1 exceeds the 2-byte buffer"),
        ((1, b"ab", 1, 2**64 - 1), ValueError, f"offset 1 + length {2**64 - 1} exceeds the 2-byte buffer"),
        ((1, memoryview(b"abcd")[::2], 0, 1), BufferError, "not C-contiguous"),
        ((1, "ab", 0, 1), TypeError, "bytes-like object is required"),
    ],
)
def test_frame_errors(twin, args, error, message):
    with pytest.raises(error) as info:
        twin.frame.raw_ledger_frame(*args)
    assert message in str(info.value)


def test_frames_errors(twin):
    with pytest.raises(ValueError, match="^sequences, offsets and lengths differ in length: 2, 1, 2$"):
        twin.frame.raw_ledger_frames(b"abc", [1, 2], [0], [1, 1])
    with pytest.raises(ValueError, match="^offset 2 \\+ length 2 exceeds the 3-byte buffer$"):
        twin.frame.raw_ledger_frames(b"abc", [1, 2], [0, 2], [1, 2])
    assert twin.frame.raw_ledger_frames(b"", [], [], []) == []


def test_parse_what_protobuf_writes(twin, pb):
    _, wider = pb
    message = wider(
        sequence=42, ledger_close_meta_xdr=b"xdr", f3=-1, f4=2**64 - 1, f5=7, f6="é", f7=2**63, f900000=b"z"
    )
    assert twin.frame.parse_raw_ledger(message.SerializeToString()) == (42, b"xdr")
    # Reversed field order, unknown fields between them, and repeated fields where the last wins.
    tail = wider(f6="unknown", f4=1).SerializeToString()
    frame = b"\x12\x01a" + tail + b"\x08\x05" + tail + b"\x12\x02bc\x08\x06" + tail
    assert twin.frame.parse_raw_ledger(frame) == (6, b"bc")
    raw_ledger, _ = pb
    assert twin.frame.parse_raw_ledger(b"") == (0, b"")
    big = raw_ledger(sequence=2**32 - 1, ledger_close_meta_xdr=PAYLOAD).SerializeToString()
    assert twin.frame.parse_raw_ledger(memoryview(big)) == (2**32 - 1, PAYLOAD)


def test_parse_agrees_with_protobuf_on_odd_input(twin, pb):
    raw_ledger, _ = pb
    # An over-long sequence varint keeps its low 32 bits; a field-2 varint is an unknown field.
    for frame in (b"\x08\x80\x80\x80\x80\x10", b"\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", b"\x10\x05\x08\x01"):
        message = raw_ledger()
        message.ParseFromString(frame)
        assert twin.frame.parse_raw_ledger(frame) == (message.sequence, message.ledger_close_meta_xdr)


@pytest.mark.parametrize(
    "frame, reason",
    [
        (b"\x08", "truncated varint at byte 1"),
        (b"\x08\x80", "truncated varint at byte 1"),
        (b"\x88", "truncated varint at byte 0"),
        (b"\x08" + b"\x80" * 10 + b"\x01", "varint over 10 bytes at byte 1"),
        (b"\x12\x03ab", "truncated field at byte 2"),
        (b"\x12\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", "truncated field at byte 11"),
        (b"\x19abcdefg", "truncated field at byte 1"),
        (b"\x1dabc", "truncated field at byte 1"),
        (b"\x1b\x1c", "unsupported wire type 3 at byte 0"),
        (b"\x08\x01\x1c", "unsupported wire type 4 at byte 2"),
        (b"\x1e", "unsupported wire type 6 at byte 0"),
        (b"\x1f", "unsupported wire type 7 at byte 0"),
        (b"\x00", "bad tag 0 at byte 0"),
        (b"\x02\x00", "bad tag 2 at byte 0"),
        (b"\x80\x80\x80\x80\x10", "bad tag 4294967296 at byte 0"),
    ],
)
def test_parse_errors(twin, frame, reason):
    with pytest.raises(ValueError) as info:
        twin.frame.parse_raw_ledger(frame)
    assert str(info.value) == f"malformed RawLedger: {reason}"


@given(sequence=st.integers(0, 2**32 - 1), data=st.binary(max_size=300), cut=st.integers(0, 300))
def test_round_trip_property(twin, sequence, data, cut):
    offset = min(cut, len(data))
    frame = twin.frame.raw_ledger_frame(sequence, data, offset, len(data) - offset)
    assert twin.frame.parse_raw_ledger(frame) == (sequence, data[offset:])


@given(
    sequence=st.one_of(st.integers(0, 2**32 - 1), st.integers(-(2**70), 2**70)),
    data=st.binary(max_size=64),
    offset=st.integers(-2, 80),
    length=st.integers(-2, 80),
    junk=st.binary(max_size=40),
)
def test_twins_agree(twins, sequence, data, offset, length, junk):
    c, py = (t.frame for t in twins)
    assert outcome(c.raw_ledger_frame, sequence, data, offset, length) == outcome(
        py.raw_ledger_frame, sequence, data, offset, length
    )
    args = (bytearray(data), [sequence, 1], [offset, 0], [length, len(data)])
    assert outcome(c.raw_ledger_frames, *args) == outcome(py.raw_ledger_frames, *args)
    for frame in (junk, b"\x08\x01\x12" + junk, junk + data):
        assert outcome(c.parse_raw_ledger, frame) == outcome(py.parse_raw_ledger, frame)
