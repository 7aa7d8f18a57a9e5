"""The host side of the serial protocol: CRC, frames, decoder resync, builders and parsers."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hand_mqtt.errors import HandMqttError, ProtocolError
from hand_mqtt.hardware import protocol as p

VECTORS_PATH = Path(__file__).resolve().parents[2] / "protocol" / "vectors.json"
VECTORS: dict[str, Any] = json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def unhex(text: str) -> bytes:
    return bytes.fromhex(text)


def decode_all(
    data: bytes, chunks: list[int] | None = None
) -> tuple[list[p.Frame], p.FrameDecoder]:
    decoder = p.FrameDecoder()
    frames: list[p.Frame] = []
    if chunks is None:
        frames = decoder.feed(data)
    else:
        pos = 0
        for size in chunks:
            frames += decoder.feed(data[pos : pos + size])
            pos += size
        frames += decoder.feed(data[pos:])
    return frames, decoder


def bitwise_crc(data: bytes) -> int:
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


# -- CRC -----------------------------------------------------------------------------------


def test_crc_check_value() -> None:
    assert p.crc8(b"123456789") == 0xF4
    assert p.crc8(b"") == 0


@pytest.mark.parametrize("case", VECTORS["crc"], ids=lambda c: c["hex"][:20] or "empty")
def test_crc_vectors(case: dict[str, Any]) -> None:
    assert p.crc8(unhex(case["hex"])) == case["crc"]


@given(st.binary(max_size=64))
def test_crc_table_matches_bitwise(data: bytes) -> None:
    assert p.crc8(data) == bitwise_crc(data)
    assert p.crc8(bytearray(data)) == p.crc8(memoryview(data)) == p.crc8(data)


# -- Frame -----------------------------------------------------------------------------------


def test_frame_encode_layout() -> None:
    frame = p.Frame(p.FrameType.SET_ALL, 7, bytes([1, 2, 3, 4, 5]))
    wire = frame.encode()
    assert wire[:4] == bytes([0xA5, 5, 0x01, 7])
    assert wire[4:9] == bytes([1, 2, 3, 4, 5])
    assert wire[-1] == p.crc8(wire[1:-1])
    assert len(wire) == 5 + p.FRAME_OVERHEAD == 10
    assert p.Frame.decode(wire) == frame


@pytest.mark.parametrize(
    ("kind", "seq", "payload"),
    [(256, 0, b""), (-1, 0, b""), (1, 256, b""), (1, -1, b""), (1, 0, bytes(17)), (1, 0, "x")],
)
def test_frame_rejects_programmer_errors(kind: int, seq: int, payload: Any) -> None:
    with pytest.raises(ValueError, match=r"must be|payload"):
        p.Frame(kind, seq, payload)


def test_frame_payload_coerced_to_bytes() -> None:
    frame = p.Frame(3, 1, bytearray(b"\x01"))  # type: ignore[arg-type]
    assert type(frame.payload) is bytes
    assert p.Frame(1, 2, b"\x01\x02").type_name == "SET_ALL"
    assert p.Frame(0x7F, 2).type_name == "0x7f"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xa5",
        bytes([0x00, 0, 3, 1, 0]),
        bytes([0xA5, 17]) + bytes(20),
        b"\xa5\x00\x03\x01\x00",
    ],
)
def test_frame_decode_rejects(data: bytes) -> None:
    with pytest.raises(ValueError, match="not a frame"):
        p.Frame.decode(data)


@pytest.mark.parametrize("case", VECTORS["frames"], ids=lambda c: c["name"])
def test_frame_vectors(case: dict[str, Any]) -> None:
    frame = p.Frame(case["type"], case["seq"], unhex(case["payload_hex"]))
    assert frame.encode().hex(" ") == case["hex"]
    assert p.Frame.decode(unhex(case["hex"])) == frame
    frames, decoder = decode_all(unhex(case["hex"]))
    assert frames == [frame]
    assert (decoder.frames, decoder.bad_crc, decoder.bad_length, decoder.pending) == (1, 0, 0, 0)


def test_vectors_cover_every_frame_type() -> None:
    types = {case["type"] for case in VECTORS["frames"]}
    assert {int(t) for t in p.FrameType} <= types
    reasons = {case["nack_reason"] for case in VECTORS["requests"]}
    assert {int(r) for r in p.NackReason} <= reasons


def test_vectors_are_lowercase_spaced_hex() -> None:
    texts = [c["hex"] for c in VECTORS["crc"]]
    for case in VECTORS["frames"]:
        texts += [case["hex"], case["payload_hex"]]
    for case in VECTORS["requests"]:
        texts += [case["hex"], case["reply_hex"]]
    for case in VECTORS["streams"]:
        texts += [case["hex"], *case["frames"]]
    for case in VECTORS["stale"]:
        texts += [chunk["hex"] for chunk in case["chunks"]] + case["frames"]
    for text in texts:
        assert text == text.lower()
        assert text == "" or all(len(b) == 2 for b in text.split(" "))
        assert bytes.fromhex(text).hex(" ") == text


# -- Decoder: vectors and resync ----------------------------------------------------------------


@pytest.mark.parametrize("case", VECTORS["streams"], ids=lambda c: c["name"])
def test_stream_vectors(case: dict[str, Any]) -> None:
    data = unhex(case["hex"])
    expected = case["frames"]
    frames, decoder = decode_all(data)
    assert [f.encode().hex(" ") for f in frames] == expected
    assert decoder.bad_crc == case["bad_crc"]
    assert decoder.bad_length == case["bad_length"]
    assert decoder.frames == len(expected)
    assert decoder.pending < p.MAX_FRAME
    consumed = sum(len(unhex(f)) for f in expected) + decoder.skipped_bytes + decoder.pending
    assert consumed == len(data)


@pytest.mark.parametrize("case", VECTORS["streams"], ids=lambda c: c["name"])
def test_stream_vectors_byte_by_byte_and_random_chunks(case: dict[str, Any]) -> None:
    data = unhex(case["hex"])
    whole, whole_decoder = decode_all(data)
    one, one_decoder = decode_all(data, [1] * len(data))
    rng = random.Random(case["name"])
    for _ in range(20):
        chunks = [rng.randint(0, 12) for _ in range(len(data))]
        some, some_decoder = decode_all(data, chunks)
        assert some == whole
        assert (some_decoder.bad_crc, some_decoder.bad_length, some_decoder.skipped_bytes) == (
            whole_decoder.bad_crc,
            whole_decoder.bad_length,
            whole_decoder.skipped_bytes,
        )
    assert one == whole
    counters = (one_decoder.bad_crc, one_decoder.bad_length, one_decoder.skipped_bytes)
    assert counters == (
        whole_decoder.bad_crc,
        whole_decoder.bad_length,
        whole_decoder.skipped_bytes,
    )


def test_resync_resumes_right_after_dropped_sync() -> None:
    good = p.heartbeat(9).encode()
    # a sync byte whose LEN (2) swallows the start of the real frame: CRC fails, then found
    frames, decoder = decode_all(bytes([0xA5, 0x02]) + good)
    assert frames == [p.Frame.decode(good)]
    assert decoder.bad_crc == 1
    assert decoder.skipped_bytes == 2


def test_decoder_reset_and_discard() -> None:
    decoder = p.FrameDecoder()
    good = p.set_all(1, [1, 2, 3, 4, 5]).encode()
    assert decoder.feed(b"\x00\xa5\xff" + good[:4]) == []
    assert decoder.pending == 4
    assert decoder.bad_length == 1
    assert decoder.discard() == 4
    assert decoder.pending == 0
    assert decoder.skipped_bytes == 7
    assert decoder.feed(good[4:]) == []  # the rest alone is garbage
    assert decoder.feed(good) == [p.Frame.decode(good)]
    decoder.reset()
    assert (decoder.frames, decoder.bad_crc, decoder.bad_length, decoder.skipped_bytes) == (
        0,
        0,
        0,
        0,
    )
    assert decoder.pending == 0


# -- Decoder: the 50 ms rule ---------------------------------------------------------------------


def feed_with_silences(
    chunks: list[dict[str, Any]], split: int | None = None
) -> tuple[list[p.Frame], p.FrameDecoder]:
    """Feed each chunk at its time (optionally byte by byte), then let its silence pass."""
    decoder = p.FrameDecoder()
    frames: list[p.Frame] = []
    now = 100.0
    for chunk in chunks:
        data = unhex(chunk["hex"])
        step = split or max(1, len(data))
        for start in range(0, len(data), step):
            frames += decoder.expire(now)
            frames += decoder.feed(data[start : start + step], now)
            now += 0.0001  # a byte's time at 115200 baud, roughly
        now += chunk["silence_ms"] / 1000.0
        frames += decoder.expire(now)
    return frames, decoder


@pytest.mark.parametrize("split", [None, 1], ids=["chunks", "bytes"])
@pytest.mark.parametrize("case", VECTORS["stale"], ids=lambda c: c["name"])
def test_stale_vectors(case: dict[str, Any], split: int | None) -> None:
    frames, decoder = feed_with_silences(case["chunks"], split)
    assert [f.encode().hex(" ") for f in frames] == case["frames"]
    assert decoder.stale_drops == case["stale_drops"]
    assert decoder.pending == case["pending"]
    fed = sum(len(unhex(chunk["hex"])) for chunk in case["chunks"])
    used = sum(len(unhex(f)) for f in case["frames"])
    assert used + decoder.skipped_bytes + decoder.pending == fed


def test_stale_at_follows_the_last_byte() -> None:
    decoder = p.FrameDecoder()
    assert decoder.stale_at is None
    assert decoder.feed(b"\xa5\x05\x01", 10.0) == []
    assert decoder.stale_at == pytest.approx(10.0 + p.STALE_FRAME_S)
    assert decoder.feed(b"\x01", 10.03) == []
    assert decoder.stale_at == pytest.approx(10.03 + p.STALE_FRAME_S)
    assert decoder.expire(10.079) == []
    assert decoder.pending == 4
    assert decoder.expire(10.08) == []
    assert decoder.pending == 0
    assert decoder.stale_at is None
    assert decoder.stale_drops == 1


def test_decoder_buffer_stays_bounded() -> None:
    decoder = p.FrameDecoder()
    rng = random.Random(1)
    for _ in range(2000):
        decoder.feed(
            bytes(rng.choice([0xA5, 0x05, 0x10, 0x00, rng.randrange(256)]) for _ in range(37))
        )
        assert decoder.pending < p.MAX_FRAME


def test_decoder_is_linear_on_sync_noise() -> None:
    # 200 kB of sync bytes with small LENs: every candidate is checked and dropped
    noise = bytes([0xA5, 0x10] * 100_000)
    frames, decoder = decode_all(noise)
    assert frames == []
    assert decoder.bad_crc + decoder.bad_length > 0
    assert decoder.pending < p.MAX_FRAME


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.lists(st.integers(min_value=0, max_value=40), max_size=40))
def test_any_bytes_never_raise_and_frames_are_valid(data: bytes, chunks: list[int]) -> None:
    frames, decoder = decode_all(data, chunks)
    for frame in frames:
        wire = frame.encode()
        assert len(frame.payload) <= p.MAX_PAYLOAD
        assert wire in data
        assert p.crc8(wire[1:-1]) == wire[-1]
    assert decoder.pending < p.MAX_FRAME
    whole, _ = decode_all(data)
    assert whole == frames


@settings(max_examples=300, deadline=None)
@given(
    st.binary(max_size=100).map(lambda b: b.replace(b"\xa5", b"")),
    st.integers(0, 255),
    st.integers(0, 255),
    st.binary(max_size=16),
)
def test_frame_after_sync_free_garbage_is_recovered(
    garbage: bytes, kind: int, seq: int, payload: bytes
) -> None:
    frame = p.Frame(kind, seq, payload)
    frames, decoder = decode_all(garbage + frame.encode())
    assert frames == [frame]
    assert decoder.skipped_bytes == len(garbage)
    assert decoder.pending == 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255), st.binary(max_size=16))))
def test_concatenated_frames_all_recovered(specs: list[tuple[int, int, bytes]]) -> None:
    frames = [p.Frame(k, s, b) for k, s, b in specs]
    got, decoder = decode_all(b"".join(f.encode() for f in frames))
    assert got == frames
    assert (decoder.bad_crc, decoder.bad_length, decoder.skipped_bytes) == (0, 0, 0)


# -- Builders -------------------------------------------------------------------------------


def test_set_all_round_trip() -> None:
    frame = p.set_all(3, [0, 45, 90, 135, 180])
    assert frame == p.Frame(p.FrameType.SET_ALL, 3, bytes([0, 45, 90, 135, 180]))
    assert p.parse_request(frame) == p.SetAll(3, (0, 45, 90, 135, 180))
    assert len(frame.encode()) == 10


def test_set_some_round_trip() -> None:
    frame = p.set_some(4, {4: 170, 0: 10})
    assert frame.payload == bytes([0x11, 10, 170])
    request = p.parse_request(frame)
    assert request == p.SetSome(4, 0x11, (10, 170))
    assert isinstance(request, p.SetSome)
    assert request.as_dict() == {0: 10, 4: 170}
    assert request.apply((90, 90, 90, 90, 90)) == (10, 90, 90, 90, 170)
    assert len(p.set_some(0, {2: 1}).encode()) == 7


def test_move_round_trip() -> None:
    frame = p.move(5, 800, {3: 180, 0: 0})
    assert frame.payload == bytes([0x20, 0x03, 0x09, 0, 180])
    request = p.parse_request(frame)
    assert request == p.Move(5, 800, 0x09, (0, 180))
    assert isinstance(request, p.Move)
    assert request.as_dict() == {0: 0, 3: 180}
    assert request.apply((90, 90, 90, 90, 90)) == (0, 90, 90, 180, 90)
    assert len(p.move(0, 65535, dict.fromkeys(range(5), 0)).encode()) == 13


def test_relax_and_calibrate_round_trip() -> None:
    assert p.relax(6, p.finger_mask([0, 4])).payload == bytes([0x11])
    assert p.parse_request(p.relax(6, 0x11)) == p.Relax(6, 0x11)
    frame = p.calibrate(7, 0x04, 2278, 722)
    assert frame.payload == bytes([0x04, 0xE6, 0x08, 0xD2, 0x02])
    assert p.parse_request(frame) == p.Calibrate(7, 0x04, 2278, 722)


def test_finger_masks() -> None:
    assert p.finger_mask([]) == 0
    assert p.finger_mask([4, 0, 0]) == 0x11
    assert p.fingers_of(0x11) == (0, 4)
    assert p.fingers_of(0) == ()
    with pytest.raises(ValueError, match="finger index"):
        p.finger_mask([5])


def test_empty_requests_round_trip() -> None:
    assert p.parse_request(p.heartbeat(5)) == p.Heartbeat(5)
    assert p.parse_request(p.hello_request(6)) == p.HelloRequest(6)
    assert p.heartbeat(5).payload == p.hello_request(6).payload == b""


def test_configure_round_trip() -> None:
    config = p.DeviceConfig(1500, p.FailsafeAction.SAFE_POSE, (1, 2, 3, 4, 5), 300)
    frame = p.configure(7, config)
    assert frame.payload == bytes([0xDC, 0x05, 1, 1, 2, 3, 4, 5, 0x2C, 0x01])
    assert p.parse_request(frame) == p.Configure(7, config)
    assert p.DeviceConfig().payload() == bytes([0, 0, 0, 180, 180, 180, 180, 180, 0, 0])


def test_device_config_coerces_action() -> None:
    config = p.DeviceConfig(failsafe_action=1)  # type: ignore[arg-type]
    assert config.failsafe_action is p.FailsafeAction.SAFE_POSE
    assert p.DeviceConfig(safe_pose=[1, 2, 3, 4, 5]).safe_pose == (1, 2, 3, 4, 5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failsafe_timeout_ms": -1},
        {"failsafe_timeout_ms": 65536},
        {"speed_dps": 70000},
        {"speed_dps": 1.5},
        {"failsafe_action": 2},
        {"safe_pose": (180, 180, 180, 180)},
        {"safe_pose": (180, 180, 181, 180, 180)},
    ],
)
def test_device_config_rejects(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="must be"):
        p.DeviceConfig(**kwargs)


@pytest.mark.parametrize(
    ("build", "args"),
    [
        (p.set_all, (0, [90, 90, 90, 90])),
        (p.set_all, (0, [90, 90, 90, 90, 181])),
        (p.set_all, (0, [90, 90, 90, 90, -1])),
        (p.set_all, (0, [90, 90, 90, 90, True])),
        (p.set_all, (0, "abcde")),
        (p.set_all, (256, [90] * 5)),
        (p.set_some, (0, {})),
        (p.set_some, (0, {5: 90})),
        (p.set_some, (0, {-1: 90})),
        (p.set_some, (0, {0: 200})),
        (p.heartbeat, (-1,)),
        (p.hello_request, (300,)),
        (p.configure, (0, None)),
        (p.move, (0, -1, {0: 90})),
        (p.move, (0, 65536, {0: 90})),
        (p.move, (0, 1.5, {0: 90})),
        (p.move, (0, 100, {})),
        (p.move, (0, 100, {0: 181})),
        (p.relax, (0, 0)),
        (p.relax, (0, 0x20)),
        (p.calibrate, (0, 0x01, 399, 2400)),
        (p.calibrate, (0, 0x01, 544, 2601)),
        (p.calibrate, (0, 0, 544, 2400)),
        (p.ack_frame, (0, [90] * 5, 256)),
        (p.ack_frame, (0, [90] * 5, 0, 0x20)),
        (p.failsafe_frame, ([90] * 6,)),
        (p.arrived_frame, ([90] * 5, 0, -1)),
        (p.hello_frame, (0, (1, 0))),
        (p.nack_frame, (0, 300)),
    ],
)
def test_builders_reject_bad_input(build: Any, args: tuple[Any, ...]) -> None:
    with pytest.raises(ValueError, match=r"must be|needs|firmware version"):
        build(*args)


# -- Replies ---------------------------------------------------------------------------------


def test_parse_replies_round_trip() -> None:
    hello = p.parse_reply(p.hello_frame(7, (1, 2, 3), p.STATUS_FAILSAFE))
    assert hello == p.Hello(7, 2, (1, 2, 3), 5, 1)
    assert isinstance(hello, p.Hello)
    assert hello.failsafe_active
    ack = p.parse_reply(p.ack_frame(8, [0, 45, 90, 135, 180], p.STATUS_MOVING))
    assert ack == p.Ack(8, (0, 45, 90, 135, 180), 2)
    assert isinstance(ack, p.Ack)
    assert ack.moving
    assert not ack.failsafe_active
    nack = p.parse_reply(p.nack_frame(9, p.NackReason.BAD_MASK))
    assert nack == p.Nack(9, p.NackReason.BAD_MASK)
    assert isinstance(nack, p.Nack)
    assert "mask" in nack.describe()
    failsafe = p.parse_reply(p.failsafe_frame([180] * 5))
    assert failsafe == p.Failsafe((180, 180, 180, 180, 180), p.STATUS_FAILSAFE)
    assert p.failsafe_frame([180] * 5).seq == 0
    relaxed = p.parse_reply(p.ack_frame(10, [90] * 5, 0, 0x11))
    assert relaxed == p.Ack(10, (90,) * 5, 0, 0x11)
    assert isinstance(relaxed, p.Ack)
    assert relaxed.relaxed_fingers == (0, 4)
    arrived = p.parse_reply(p.arrived_frame([0] * 5, 0, 0x02))
    assert arrived == p.Arrived((0,) * 5, 0, 0x02)
    assert isinstance(arrived, p.Arrived)
    assert not arrived.moving
    assert p.arrived_frame([0] * 5).seq == 0


def test_unknown_nack_reason_kept_as_int() -> None:
    nack = p.parse_reply(p.nack_frame(1, 42))
    assert nack == p.Nack(1, 42)
    assert isinstance(nack, p.Nack)
    assert "42" in nack.describe()


def test_every_nack_reason_has_a_sentence() -> None:
    for reason in p.NackReason:
        assert reason.describe()


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (p.Frame(p.FrameType.SET_ALL, 1, bytes(5)), "unexpected frame type SET_ALL"),
        (p.Frame(0x90, 1, b""), "unexpected frame type 0x90"),
        (p.Frame(p.FrameType.ACK, 1, bytes(6)), "6 payload bytes, expected 7"),
        (p.Frame(p.FrameType.ARRIVED, 0, bytes(6)), "6 payload bytes, expected 7"),
        (p.Frame(p.FrameType.HELLO, 1, bytes(7)), "7 payload bytes, expected 6"),
        (p.Frame(p.FrameType.NACK, 1, b""), "0 payload bytes, expected 1"),
        (p.Frame(p.FrameType.FAILSAFE, 0, bytes(16)), "16 payload bytes"),
        (p.Frame(p.FrameType.ACK, 1, bytes([90, 90, 181, 90, 90, 0, 0])), "angle above 180"),
        (p.Frame(p.FrameType.FAILSAFE, 0, bytes([255, 0, 0, 0, 0, 1, 0])), "angle above 180"),
        (p.Frame(p.FrameType.ACK, 1, bytes([90, 90, 90, 90, 90, 0, 0x20])), "sixth finger"),
    ],
)
def test_parse_reply_rejects(frame: p.Frame, match: str) -> None:
    with pytest.raises(ProtocolError, match=match) as info:
        p.parse_reply(frame)
    assert isinstance(info.value, HandMqttError)


# -- Requests (firmware side), from the shared vectors ---------------------------------------------


@pytest.mark.parametrize("case", VECTORS["requests"], ids=lambda c: c["name"])
def test_request_vectors(case: dict[str, Any]) -> None:
    frame = p.Frame.decode(unhex(case["hex"]))
    reply = p.parse_reply(p.Frame.decode(unhex(case["reply_hex"])))
    if case["expect"] == "nack":
        with pytest.raises(p.RequestRejected) as info:
            p.parse_request(frame)
        assert info.value.reason == case["nack_reason"]
        assert info.value.seq == frame.seq
        assert isinstance(info.value, ProtocolError)
        assert reply == p.Nack(frame.seq, p.NackReason(case["nack_reason"]))
        return
    request = p.parse_request(frame)
    assert case["expect"] == "apply"
    assert request.seq == frame.seq
    if isinstance(request, p.SetSome | p.Move):
        assert case["mask"] == request.mask
    else:
        assert case["mask"] is None
    if case["angles"] is None:
        assert isinstance(request, p.HelloRequest)
        assert isinstance(reply, p.Hello)
        assert case["relaxed"] is None
    else:
        assert isinstance(reply, p.Ack)
        assert list(reply.angles) == case["angles"]
        assert reply.relaxed == case["relaxed"]
        assert reply.seq == frame.seq


def test_request_rejected_message_is_readable() -> None:
    with pytest.raises(p.RequestRejected, match=r"above 180 degrees .*seq 3, NACK 3") as info:
        p.parse_request(p.Frame(p.FrameType.SET_ALL, 3, bytes([0, 0, 200, 0, 0])))
    assert info.value.reason is p.NackReason.BAD_ANGLE
