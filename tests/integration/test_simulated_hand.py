"""The simulated hand behind a real pty and a real TCP port, driven through pyserial."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import serial

from hand_mqtt.devtools.simulated_port import PtyHand, SocketHand
from hand_mqtt.devtools.simulator import SimulatedFirmware
from hand_mqtt.hardware import protocol as p

TIMEOUT_S = 3.0


def open_port(url: str) -> serial.Serial:
    return serial.serial_for_url(url, baudrate=115200, timeout=0.05)


class Reader:
    """Collects replies from a port."""

    def __init__(self, port: serial.Serial) -> None:
        self.port = port
        self.decoder = p.FrameDecoder()

    def wait_for(self, match: Callable[[p.Reply], bool], timeout: float = TIMEOUT_S) -> p.Reply:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for frame in self.decoder.feed(self.port.read(64)):
                reply = p.parse_reply(frame)
                if match(reply):
                    return reply
        raise AssertionError("no matching reply in time")

    def request(self, frame: p.Frame) -> p.Reply:
        self.port.write(frame.encode())
        return self.wait_for(
            lambda r: isinstance(r, p.Hello | p.Ack | p.Nack) and r.seq == frame.seq
        )


def port_fails(port: serial.Serial, *, write: bool = True, timeout: float = TIMEOUT_S) -> bool:
    """Whether the port raises within the timeout, as with a pulled cable.

    Reads first: writing to a TCP peer that has closed provokes a reset, after which pyserial's
    own close() fails to release the socket (its shutdown raises and is swallowed first).
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            port.read(16)
            if write:
                port.write(p.heartbeat(1).encode())
        except (serial.SerialException, OSError):
            return True
    return False


@pytest.fixture
def pty_hand(tmp_path: Path) -> Iterator[PtyHand]:
    with PtyHand(directory=tmp_path, name="ttyHAND") as hand:
        yield hand


@pytest.fixture
def socket_hand() -> Iterator[SocketHand]:
    with SocketHand() as hand:
        yield hand


def test_pty_hello_and_set_all(pty_hand: PtyHand, tmp_path: Path) -> None:
    assert pty_hand.path == str(tmp_path / "ttyHAND")
    assert Path(pty_hand.path).is_symlink()
    assert os.readlink(pty_hand.path) == pty_hand.device
    with open_port(pty_hand.path) as port:
        reader = Reader(port)
        hello = reader.request(p.hello_request(1))
        assert hello == p.Hello(1, 2, (2, 0, 0), 5, 0)
        ack = reader.request(p.set_all(2, [0, 45, 90, 135, 180]))
        assert ack == p.Ack(2, (0, 45, 90, 135, 180), 0)
    assert pty_hand.firmware.targets == (0, 45, 90, 135, 180)
    assert pty_hand.frames_received == 2
    assert pty_hand.bytes_received == 5 + 10


def test_pty_client_can_close_and_reopen(pty_hand: PtyHand) -> None:
    for seq in (1, 2, 3):
        with open_port(pty_hand.path) as port:
            assert isinstance(Reader(port).request(p.hello_request(seq)), p.Hello)
    assert pty_hand.frames_received == 3


def test_pty_unplug_and_plug(pty_hand: PtyHand) -> None:
    first_device = pty_hand.device
    with open_port(pty_hand.path) as port:
        reader = Reader(port)
        reader.request(p.set_all(1, [0] * 5))
        pty_hand.unplug()
        assert not pty_hand.plugged
        assert not Path(pty_hand.path).exists()
        assert port_fails(port)
        with pytest.raises(serial.SerialException):
            port.write(b"\x00")
    with pytest.raises(serial.SerialException):
        open_port(pty_hand.path)
    pty_hand.plug()
    assert pty_hand.device
    assert os.readlink(pty_hand.path) == pty_hand.device
    with open_port(pty_hand.path) as port:
        hello = Reader(port).request(p.hello_request(9))
        assert hello == p.Hello(9, 2, (2, 0, 0), 5, 0)
    assert pty_hand.firmware.targets == (90,) * 5  # rebooted
    assert first_device  # the pts number may or may not be reused


def test_pty_boot_hello_waits_in_the_buffer(tmp_path: Path) -> None:
    with PtyHand(directory=tmp_path) as hand:
        # open without pyserial's flush: the boot HELLO is there
        fd = os.open(hand.path, os.O_RDWR | os.O_NOCTTY)
        try:
            deadline = time.monotonic() + TIMEOUT_S
            data = b""
            decoder = p.FrameDecoder()
            frames: list[p.Frame] = []
            while not frames and time.monotonic() < deadline:
                data = os.read(fd, 64)
                frames = decoder.feed(data)
            assert [p.parse_reply(f) for f in frames] == [p.Hello(0, 2, (2, 0, 0), 5, 0)]
        finally:
            os.close(fd)


def test_pty_inject_noise_and_on_frame(tmp_path: Path) -> None:
    seen: list[p.Frame] = []
    with PtyHand(directory=tmp_path, on_frame=seen.append) as hand, open_port(hand.path) as port:
        reader = Reader(port)
        hand.inject(b"\x00\xa5\xff\x13" + p.nack_frame(33, p.NackReason.BAD_ANGLE).encode())
        assert reader.wait_for(lambda r: isinstance(r, p.Nack)) == p.Nack(
            33, p.NackReason.BAD_ANGLE
        )
        port.write(b"\x01\x02\xa5\x40" + p.heartbeat(4).encode())
        assert reader.wait_for(lambda r: getattr(r, "seq", None) == 4) == p.Ack(
            4, (90,) * 5, 0, 0b11111
        )
    assert [f.seq for f in seen] == [4]
    assert hand.firmware.bad_frames == 1


def test_pty_failsafe_fires_in_real_time(pty_hand: PtyHand) -> None:
    with open_port(pty_hand.path) as port:
        reader = Reader(port)
        reader.request(p.set_all(1, [0] * 5))
        config = p.DeviceConfig(100, p.FailsafeAction.SAFE_POSE)
        # Timed from before the configuration is sent: the firmware's timer cannot start
        # earlier, however late this thread reads its ACK, so the bound is never too tight.
        started = time.monotonic()
        reader.request(p.configure(2, config))
        failsafe = reader.wait_for(lambda r: isinstance(r, p.Failsafe))
        assert time.monotonic() - started >= 0.1, "the failsafe fired before its timeout"
        assert failsafe == p.Failsafe((180,) * 5, p.STATUS_FAILSAFE)


def test_pty_hand_uses_given_firmware_and_temp_dir() -> None:
    firmware = SimulatedFirmware()
    hand = PtyHand(firmware=firmware)
    hand.start()
    try:
        assert hand.firmware is firmware
        with open_port(hand.path) as port:
            assert isinstance(Reader(port).request(p.heartbeat(1)), p.Ack)
        directory = Path(hand.path).parent
    finally:
        hand.stop()
    hand.stop()  # idempotent
    assert not directory.exists()


def test_socket_hello_and_set_all(socket_hand: SocketHand) -> None:
    assert socket_hand.url == f"socket://127.0.0.1:{socket_hand.port}"
    assert socket_hand.port > 0
    with serial.serial_for_url(socket_hand.url, baudrate=115200, timeout=0.05) as port:
        reader = Reader(port)
        assert reader.request(p.hello_request(1)) == p.Hello(1, 2, (2, 0, 0), 5, 0)
        assert reader.request(p.set_some(2, {4: 0})) == p.Ack(2, (90, 90, 90, 90, 0), 0, 0b01111)
    assert socket_hand.firmware.targets == (90, 90, 90, 90, 0)
    assert socket_hand.frames_received == 2


def test_socket_unplug_and_plug(socket_hand: SocketHand) -> None:
    url = socket_hand.url
    with open_port(url) as port:
        reader = Reader(port)
        reader.request(p.set_all(1, [0] * 5))
        socket_hand.unplug()
        assert port_fails(port, write=False)
    with pytest.raises(serial.SerialException):
        open_port(url)
    socket_hand.plug()
    assert socket_hand.url == url
    with open_port(url) as port:
        assert Reader(port).request(p.hello_request(5)) == p.Hello(5, 2, (2, 0, 0), 5, 0)
    assert socket_hand.firmware.targets == (90,) * 5


def test_socket_one_client_at_a_time(socket_hand: SocketHand) -> None:
    with open_port(socket_hand.url) as first:
        reader = Reader(first)
        reader.request(p.heartbeat(1))
        with open_port(socket_hand.url) as second:
            assert port_fails(second, write=False)
        assert isinstance(reader.request(p.heartbeat(2)), p.Ack)
