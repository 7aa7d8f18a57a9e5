"""Users, passwords and topic rights, on Mosquitto (the shipped config) and on amqtt's secured mode.

Every broker test runs twice: Mosquitto with ``broker/mosquitto.conf`` adapted to free ports, and
the embedded broker given the same password and ACL files.
"""

from __future__ import annotations

import ast
import functools
import json
import re
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from typer.testing import CliRunner

from hand_mqtt import (
    Arbiter,
    BrokerUrl,
    ConfigError,
    DeviceService,
    DeviceSettings,
    HandState,
    MqttClient,
    MqttError,
    PoseBook,
    PtyHand,
    Reported,
    Topics,
    Will,
)
from hand_mqtt.accounts import (
    Account,
    AclFile,
    Role,
    default_users,
    hash_password,
    read_acl,
    read_password_file,
    render_acl,
    verify_password,
)
from hand_mqtt.broker.acl import READ, WRITE, AccessRules
from hand_mqtt.cli import app
from hand_mqtt.clients.homeassistant import Discovery, discovery_configs
from hand_mqtt.hardware.protocol import DeviceConfig
from harness.brokers import AmqttBroker, mosquitto_binary
from harness.waiting import wait_until as eventually
from tests.conftest import need
from tests.deploy.conftest import SecuredBroker, unique_hand
from tests.deploy.support import (
    ROOT,
    SHIPPED_ACL,
    ShippedMosquitto,
    Watcher,
    make_certs,
    make_users,
)
from tests.support.raw_mqtt import CONNACK_ACCEPTED, RawClient

TOPICS = Topics("hand")
FAST = DeviceSettings(
    ack_timeout=0.2,
    backoff_initial=0.05,
    backoff_max=0.5,
    firmware=DeviceConfig(failsafe_timeout_ms=0),
)
OPEN = (180, 180, 180, 180, 180)
OKAY = (0, 180, 180, 180, 0)


def client(url: str, name: str = "test") -> MqttClient:
    mqtt = MqttClient(BrokerUrl.parse(url), name=name)
    mqtt.connect()
    return mqtt


@contextmanager
def services(broker: SecuredBroker, hand: str) -> Iterator[tuple[Arbiter, DeviceService, PtyHand]]:
    """Arbiter and device service, each logged in as its own user, on a simulated hand."""
    sim = PtyHand()
    sim.start()
    arbiter = Arbiter(
        MqttClient(BrokerUrl.parse(broker.url("arbiter")), name="arbiter"),
        topics=TOPICS,
        hands=[hand],
    )
    device: DeviceService | None = None
    try:
        arbiter.start()
        assert arbiter.wait_ready(10), "the arbiter did not become ready"
        device = DeviceService(
            MqttClient(BrokerUrl.parse(broker.url(f"device-{hand}")), name="device"),
            sim.path,
            topics=TOPICS,
            hand=hand,
            settings=FAST,
        )
        device.start()
        running = device
        eventually(lambda: running.link_up, 10, "the device's link")
        eventually(lambda: sim.firmware.targets == OPEN, 10, "the hand open")
        yield arbiter, device, sim
    finally:
        if device is not None:
            device.stop()
        arbiter.stop()
        sim.stop()


# -- logging in --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("user", "password"),
    [(None, None), ("viewer", "wrong"), ("stranger", "whatever"), ("viewer", "")],
    ids=["anonymous", "wrong-password", "unknown-user", "empty-password"],
)
def test_clients_without_valid_credentials_are_refused(
    secured: SecuredBroker, user: str | None, password: str | None
) -> None:
    url = secured.url(user, password=password) if user else secured.url(None)
    with pytest.raises(MqttError, match="could not connect"):
        MqttClient(BrokerUrl.parse(url), name="intruder").connect(1.0)


def test_every_role_with_its_password_logs_in(secured: SecuredBroker) -> None:
    for user in secured.passwords:
        client(secured.url(user), user).stop()


# -- rights ------------------------------------------------------------------------------------


def topic_kinds(hand: str) -> dict[str, str]:
    t = TOPICS.hand(hand)
    return {
        "set": t.set,
        "finger-set": t.finger_set("index"),
        "pose-set": t.pose_set,
        "state": t.state,
        "finger": t.finger("thumb"),
        "error": t.error,
        "reported": t.reported,
        "availability": t.availability,
        "bridge-state": TOPICS.bridge_state,
    }


# Who may publish what (docs/security.md has the same table); "device" is the account of
# another hand, "device-<hand>" the one of the hand under test.
WRITERS = {
    "set": {"operator", "operator2", "homeassistant"},
    "finger-set": {"operator", "operator2", "homeassistant"},
    "pose-set": {"operator", "operator2", "homeassistant"},
    "state": {"arbiter"},
    "finger": {"arbiter"},
    "error": {"arbiter"},
    "reported": {"device-<hand>"},
    "availability": {"device-<hand>"},
    "bridge-state": {"arbiter"},
}
ROLE_USERS = ["arbiter", "device", "homeassistant", "operator", "operator2", "viewer", "nobody"]


def test_write_rights_per_role(secured: SecuredBroker) -> None:
    """Every role publishes on every kind of topic; a viewer reports what got through."""
    hand = unique_hand()
    kinds = topic_kinds(hand)
    watcher = Watcher(secured.url("viewer"), f"hand/{hand}/#", TOPICS.bridge_state)
    own_device = f"device-{hand}"
    publishers = {user: client(secured.url(user), user) for user in [*ROLE_USERS, own_device]}
    try:
        for user, mqtt in publishers.items():
            for kind, topic in kinds.items():
                # Not retained: the shared bridge topic must not keep test payloads.
                mqtt.publish(topic, f"{user}|{kind}", wait=5)

        def got() -> set[tuple[str, ...]]:
            return {
                tuple(m.payload.decode().split("|"))
                for m in watcher.messages
                if b"|" in m.payload and m.payload.decode().split("|")[0] in publishers
            }

        expected = {
            (own_device if user == "device-<hand>" else user, kind)
            for kind, users in WRITERS.items()
            for user in users
        }
        eventually(lambda: got() >= expected, 10, "every allowed publish")
        watcher.barrier()  # and then nothing else
        assert got() == expected
    finally:
        for mqtt in publishers.values():
            mqtt.stop()
        watcher.close()


def test_services_with_their_own_credentials_work_end_to_end(secured: SecuredBroker) -> None:
    hand = unique_hand()
    t = TOPICS.hand(hand)
    with services(secured, hand) as (arbiter, device, sim):
        operator = client(secured.url("operator"), "operator")
        watcher = Watcher(secured.url("viewer"), f"hand/{hand}/#")
        try:
            operator.publish(t.set, json.dumps({"pose": "peace", "transaction": "p1"}))
            eventually(lambda: sim.firmware.targets == (180, 180, 0, 0, 0), 10, "peace")
            eventually(
                lambda: (
                    Reported.model_validate_json(watcher.last(t.reported) or b"{}").angles
                    == (180, 180, 0, 0, 0)
                ),
                10,
                "reported peace",
            )
            state = HandState.model_validate_json(watcher.last(t.state) or b"")
            assert (state.pose, state.transaction, state.version) == ("peace", "p1", 1)
            assert watcher.last(t.availability) == b"online"
            operator.publish(t.finger_set("index"), b"nonsense")
            eventually(lambda: watcher.on(t.error), 5, "an error for the operator")
            bridge = Watcher(secured.url("viewer"), "hand/bridge/+")
            try:
                announced = [TOPICS.bridge_state, TOPICS.bridge_poses, TOPICS.bridge_gestures]
                eventually(lambda: all(bridge.last(topic) for topic in announced), 5, "the bridge")
            finally:
                bridge.close()
            assert arbiter.rejected == 1
            assert device.reported.link == "up"
        finally:
            operator.stop()
            watcher.close()


def test_viewer_commands_never_reach_the_arbiter(secured: SecuredBroker) -> None:
    hand = unique_hand()
    t = TOPICS.hand(hand)
    with services(secured, hand) as (arbiter, _device, sim):
        viewer = client(secured.url("viewer"), "viewer")
        operator = client(secured.url("operator"), "operator")
        try:
            viewer.publish(t.set, json.dumps({"pose": "fist"}), wait=5)
            viewer.publish(t.finger_set("index"), b"0", wait=5)
            viewer.publish(t.pose_set, b"fist", wait=5)
            # The sentinel: the same path from an operator, after the viewer's were handled.
            operator.publish(t.finger_set("index"), b"0", wait=5)
            eventually(lambda: sim.firmware.targets == (0, 180, 180, 180, 180), 10, "index 0")
            assert (arbiter.accepted, arbiter.rejected) == (1, 0)
            assert arbiter.state(hand).version == 1
        finally:
            viewer.stop()
            operator.stop()


def test_operator_cannot_forge_retained_state_or_reported(secured: SecuredBroker) -> None:
    hand = unique_hand()
    t = TOPICS.hand(hand)
    forged_state = HandState(index=0, middle=0, ring=0, pinky=0, thumb=0, version=99)
    forged_reported = Reported(index=0, middle=0, ring=0, pinky=0, thumb=0, link="up")
    with services(secured, hand) as (arbiter, device, sim):
        live = Watcher(secured.url("viewer"), f"hand/{hand}/#", TOPICS.bridge_state)
        operator = client(secured.url("operator"), "operator")
        try:
            for topic, payload in [
                (t.state, forged_state.model_dump_json()),
                (t.reported, forged_reported.model_dump_json()),
                (t.availability, "offline"),
                (t.finger("index"), "0"),
                (t.error, '{"error": "forged"}'),
                (TOPICS.bridge_state, "offline"),
            ]:
                operator.publish(topic, payload, retain=True, wait=5)
            # The sentinel: a command the operator may send, answered on the same topics.
            operator.publish(t.pose_set, b"okay", wait=5)
            eventually(lambda: device.reported.angles == OKAY, 10, "the hand at okay")
            eventually(lambda: live.last(t.reported) is not None, 10, "reported")
            live.barrier()
            assert not [
                m for m in live.messages if b"forged" in m.payload or b'"version":99' in m.payload
            ]
            assert sim.firmware.targets == OKAY
            assert arbiter.state(hand).version == 1
        finally:
            operator.stop()
            live.close()
        fresh = Watcher(secured.url("viewer"), f"hand/{hand}/#", TOPICS.bridge_state)
        try:
            # Each subscription's retained messages come on their own: wait for both.
            eventually(
                lambda: (
                    fresh.last(t.reported) is not None
                    and fresh.last(TOPICS.bridge_state) is not None
                ),
                5,
                "retained reported and bridge state",
            )
            assert HandState.model_validate_json(fresh.last(t.state) or b"").version == 1
            assert Reported.model_validate_json(fresh.last(t.reported) or b"").angles == OKAY
            assert fresh.last(t.availability) == b"online"
            assert fresh.last(t.finger("index")) == b"0"
            assert fresh.last(TOPICS.bridge_state) == b"online"
        finally:
            fresh.close()


def test_a_user_without_rights_sees_nothing(secured: SecuredBroker) -> None:
    hand = unique_hand()
    t = TOPICS.hand(hand)
    with services(secured, hand) as (arbiter, _device, sim):
        # Mosquitto accepts these subscriptions and delivers nothing; amqtt refuses them.
        nobody = Watcher(secured.url("nobody"), "#", "hand/#", t.state, t.reported)
        operator = client(secured.url("operator"), "operator")
        try:
            nobody.client.publish(t.set, json.dumps({"pose": "fist"}), wait=5)
            operator.publish(t.pose_set, b"okay", wait=5)
            eventually(lambda: sim.firmware.targets == OKAY, 10, "okay")
            nobody.barrier()  # its own echo comes back after anything queued for it
            assert [(m.topic, m.retain) for m in nobody.messages if "/sync/" not in m.topic] == []
            assert arbiter.accepted == 1
        finally:
            nobody.close()
            operator.stop()


def test_websockets_listener_has_the_same_rules(secured: SecuredBroker) -> None:
    hand = unique_hand()
    t = TOPICS.hand(hand)
    with pytest.raises(MqttError):
        MqttClient(BrokerUrl.parse(secured.url(None, scheme="ws")), name="anon-ws").connect(1.0)
    watcher = Watcher(secured.url("viewer", scheme="ws"), f"hand/{hand}/#")
    operator = client(secured.url("operator", scheme="ws"), "operator-ws")
    viewer = client(secured.url("viewer", scheme="ws"), "viewer-ws")
    try:
        operator.publish(t.set, b'{"pose": "okay"}', wait=5)
        viewer.publish(t.set, b'{"pose": "viewer"}', wait=5)
        operator.publish(t.set, b'{"pose": "sentinel"}', wait=5)
        eventually(lambda: len(watcher.on(t.set)) >= 2, 5, "the operator's commands")
        watcher.barrier()
        assert watcher.payloads(t.set) == [b'{"pose": "okay"}', b'{"pose": "sentinel"}']
    finally:
        for mqtt in (operator, viewer):
            mqtt.stop()
        watcher.close()


# -- TLS ---------------------------------------------------------------------------------------


def test_tls_listener_with_certificates_from_the_shipped_script(tmp_path: Path) -> None:
    need(mosquitto_binary() is not None, "mosquitto is not installed")
    need(shutil.which("openssl") is not None, "openssl is not installed")
    folder = tmp_path / "broker"
    folder.mkdir()
    make_certs(folder / "certs")
    passwords = make_users(folder, default_users())
    broker = ShippedMosquitto(folder, tls=True)
    broker.start()
    ca = str(folder / "certs" / "ca.crt")
    try:
        url = broker.url_for("operator", passwords["operator"], scheme="mqtts")
        watcher = Watcher(
            broker.url_for("viewer", passwords["viewer"], scheme="mqtts"), "hand/tls/#", ca_file=ca
        )
        operator = MqttClient(BrokerUrl.parse(url, ca_file=ca), name="tls")
        try:
            operator.connect()
            operator.publish("hand/tls/set", b'{"pose": "peace"}', wait=5)
            eventually(lambda: watcher.on("hand/tls/set"), 5, "a command over TLS")
        finally:
            operator.stop()
            watcher.close()
        # A client that does not trust our CA refuses the broker. (Checked on a bare TLS
        # socket: paho leaves the socket of a failed handshake to the garbage collector.)
        assert broker.tls_port is not None
        with (
            socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5) as raw,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            ssl.create_default_context().wrap_socket(raw, server_hostname="localhost")
        trusted = ssl.create_default_context(cafile=ca)
        with (
            socket.create_connection(("127.0.0.1", broker.tls_port), timeout=5) as raw,
            trusted.wrap_socket(raw, server_hostname="localhost") as tls,
        ):
            assert tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        broker.stop()


# -- password file and ACL file ------------------------------------------------------------------


def test_hashes_agree_with_mosquitto_passwd(tmp_path: Path) -> None:
    need(shutil.which("mosquitto_passwd") is not None, "mosquitto_passwd is not installed")
    path = tmp_path / "passwd"
    subprocess.run(["mosquitto_passwd", "-c", "-b", str(path), "alice", "s3cret pass"], check=True)
    hashed = read_password_file(path)["alice"]
    assert hashed.startswith("$7$")
    assert verify_password("s3cret pass", hashed)
    assert not verify_password("s3cret", hashed)
    # And ours has the same shape, with the salt and count it says.
    ours = hash_password("s3cret pass", iterations=101, salt=bytes(12))
    assert ours.split("$")[1:4] == ["7", "101", "AAAAAAAAAAAAAAAA"]
    assert verify_password("s3cret pass", ours)
    for broken in ["", "$7$", "$7$x$y$z", "$7$0$AAAA$AAAA", "$6$!!$??", "plain"]:
        assert not verify_password("s3cret pass", broken)


def test_shipped_acl_is_what_the_roles_render() -> None:
    assert SHIPPED_ACL.read_text() == render_acl(default_users())
    assert read_acl(SHIPPED_ACL.read_text()) == AclFile("hand", "homeassistant", default_users())


def test_an_old_acl_without_the_device_hand_says_what_to_do() -> None:
    with pytest.raises(ConfigError, match="--role device --hand"):
        read_acl("# base: hand\n# role: device\nuser device\ntopic read hand/+/state\n")
    with pytest.raises(ConfigError, match="only a device account has a hand"):
        Account(Role.viewer, "hand1")


def test_users_commands_manage_both_files(tmp_path: Path) -> None:
    runner = CliRunner()
    files = ["--password-file", str(tmp_path / "passwd"), "--acl-file", str(tmp_path / "acl")]
    added = runner.invoke(app, ["users", "add", "ann", "--role", "operator", *files])
    assert added.exit_code == 0, added.output
    password = added.stdout.strip().splitlines()[-1]
    assert verify_password(password, read_password_file(tmp_path / "passwd")["ann"])
    assert (tmp_path / "passwd").stat().st_mode & 0o077 == 0
    piped = runner.invoke(
        app,
        ["users", "add", "bob", "--role", "viewer", "--password-stdin", *files],
        input="bobs password\n",
    )
    assert piped.exit_code == 0, piped.output
    assert verify_password("bobs password", read_password_file(tmp_path / "passwd")["bob"])
    dev = runner.invoke(app, ["users", "add", "pi", "--role", "device", "--hand", "left", *files])
    assert dev.exit_code == 0, dev.output
    assert read_acl((tmp_path / "acl").read_text()).users == {
        "ann": Account(Role.operator),
        "bob": Account(Role.viewer),
        "pi": Account(Role.device, "left"),
    }
    assert "topic readwrite hand/left/reported" in (tmp_path / "acl").read_text()
    listed = runner.invoke(app, ["users", "list", *files])
    assert "ann" in listed.stdout
    assert "viewer" in listed.stdout
    assert "device left" in listed.stdout
    changed = runner.invoke(app, ["users", "passwd", "ann", *files[:2]])
    assert changed.exit_code == 0
    new = changed.stdout.strip().splitlines()[-1]
    assert new != password
    assert verify_password(new, read_password_file(tmp_path / "passwd")["ann"])
    removed = runner.invoke(app, ["users", "remove", "bob", *files])
    assert removed.exit_code == 0
    assert "bob" not in read_password_file(tmp_path / "passwd")
    assert "user bob" not in (tmp_path / "acl").read_text()
    bad = runner.invoke(app, ["users", "add", "x y", "--role", "viewer", *files])
    assert bad.exit_code == 2  # a wrong argument, like any usage error
    assert bad.stderr.startswith("error: ")


@pytest.mark.parametrize(
    ("acl", "user", "client_id", "topic", "access", "allowed"),
    [
        ("user u\ntopic read a/#", "u", "c", "a/b", READ, True),
        ("user u\ntopic read a/#", "u", "c", "a/b", WRITE, False),
        ("user u\ntopic a/#", "u", "c", "a/b", WRITE, True),
        ("user u\ntopic readwrite a/#\ntopic deny a/secret", "u", "c", "a/secret", READ, False),
        ("topic read pub/#\nuser u\ntopic read a/#", None, "c", "pub/x", READ, True),
        ("topic read pub/#\nuser u\ntopic read a/#", "u", "c", "pub/x", READ, False),
        ("pattern write s/%c", "u", "me", "s/me", WRITE, True),
        ("pattern write s/%c", "u", "me", "s/you", WRITE, False),
        ("pattern write s/%c", "u", "a+b", "s/a+b", WRITE, False),
        ("pattern write u/%u", None, "c", "u/", WRITE, False),
        ("pattern write u/%u", "ann", "c", "u/ann", WRITE, True),
        ("user u\ntopic read #", "u", "c", "$SYS/x", READ, False),
    ],
)
def test_access_rules_follow_mosquitto(
    acl: str, user: str | None, client_id: str, topic: str, access: int, allowed: bool
) -> None:
    assert AccessRules.parse(acl).allowed(user, client_id, topic, access) is allowed


def test_nobody_reads_another_clients_echo_topic() -> None:
    """The echo topics hold client ids: only their own client reads or writes them."""
    rules = AccessRules.parse(render_acl(default_users()))
    for user in default_users():
        assert rules.allowed(user, "me", "hand/bridge/sync/me", READ | WRITE)
        assert not rules.allowed(user, "me", "hand/bridge/sync/someone", READ)
        assert not rules.allowed(user, "me", "hand/bridge/sync/someone", WRITE)
    assert rules.allowed("viewer", "me", "hand/bridge/state", READ)
    assert rules.allowed("viewer", "me", "hand/h1/index/set", READ)


# -- no code execution from data ---------------------------------------------------------------

FORBIDDEN_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill"}
FORBIDDEN_CALLS = {"eval", "exec"}


def dangerous_uses(source: str, filename: str) -> list[str]:
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        line = getattr(node, "lineno", 0)
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module.split(".")[0]]
        found += [f"{filename}:{line}: imports {n}" for n in names if n in FORBIDDEN_MODULES]
        if isinstance(node, ast.Call):
            func = node.func
            name = (
                func.id
                if isinstance(func, ast.Name)
                else func.attr
                if isinstance(func, ast.Attribute)
                else ""
            )
            if name in FORBIDDEN_CALLS or name == "__import__":
                found.append(f"{filename}:{line}: calls {name}()")
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_CALLS | FORBIDDEN_MODULES:
            found.append(f"{filename}:{line}: refers to {node.id}")
    return found


def test_the_scanner_catches_each_form() -> None:
    sample = (
        "import pickle\nfrom marshal import loads\nimport shelve as s\n"
        "eval('1')\nexec('x=1')\nbuiltins.eval('2')\nf = exec\n__import__('os')\n"
    )
    flagged = {int(problem.split(":")[1]) for problem in dangerous_uses(sample, "sample.py")}
    assert flagged == set(range(1, 9))


def test_package_never_evaluates_or_unpickles_data() -> None:
    problems: list[str] = []
    for path in sorted((ROOT / "hand_mqtt").rglob("*.py")):
        problems += dangerous_uses(path.read_text(encoding="utf-8"), str(path.relative_to(ROOT)))
    assert problems == []


# -- wills and client ids ------------------------------------------------------------------------


def test_a_will_passes_the_same_check_as_a_publish(secured: SecuredBroker) -> None:
    """A will the user may not publish is never published: not a forged state, command or
    availability. Then an operator's will on a command topic, which it may publish, arrives
    on the same path: it comes after any forged one would have."""
    hand = unique_hand()
    t = TOPICS.hand(hand)
    forged = HandState(index=0, middle=0, ring=0, pinky=0, thumb=0, version=999_999)
    watcher = Watcher(secured.url("viewer"), f"hand/{hand}/#")
    try:
        for user, topic, payload in [
            ("viewer", t.state, forged.model_dump_json().encode()),
            ("viewer", t.set, b'{"pose": "fist", "transaction": "forged"}'),
            ("viewer", t.availability, b"forged"),
            ("nobody", t.state, forged.model_dump_json().encode()),
            ("operator", t.state, forged.model_dump_json().encode()),
        ]:
            # Mosquitto accepts the connection and drops the will when it is due; the
            # embedded broker does the same.
            forger = MqttClient(
                BrokerUrl.parse(secured.url(user)),
                name=f"forger-{user}",
                will=Will(topic, payload, qos=1, retain=True),
            )
            forger.connect()
            forger.abort()
        sentinel = MqttClient(
            BrokerUrl.parse(secured.url("operator")),
            name="sentinel",
            will=Will(t.set, b"sentinel", qos=1, retain=False),
        )
        sentinel.connect()
        sentinel.abort()
        eventually(lambda: watcher.payloads(t.set) == [b"sentinel"], 10, "the operator's will")
        assert [(m.topic, m.payload) for m in watcher.messages] == [(t.set, b"sentinel")]
    finally:
        watcher.close()


@pytest.mark.parametrize(
    ("user", "password", "clean"),
    [
        ("viewer", "wrong", True),
        ("viewer", "wrong", False),
        (None, None, True),
        ("stranger", "whatever", False),
    ],
    ids=["wrong-password", "wrong-password-persistent", "anonymous", "unknown-user-persistent"],
)
def test_a_refused_login_with_a_service_client_id_changes_nothing(
    secured: SecuredBroker, user: str | None, password: str | None, clean: bool
) -> None:
    hand = unique_hand()
    t = TOPICS.hand(hand)
    with services(secured, hand) as (arbiter, device, sim):
        for victim in (arbiter.client.client_id, device.client.client_id):
            with RawClient(secured.port) as intruder:
                code = intruder.connect(victim, username=user, password=password, clean=clean)
                assert code != CONNACK_ACCEPTED
                assert intruder.closed_by_broker()
        operator = client(secured.url("operator"), "operator")
        watcher = Watcher(secured.url("viewer"), f"hand/{hand}/#", TOPICS.bridge_state)
        try:
            # Both services still hear: a command goes through the arbiter to the hand.
            operator.publish(t.set, b'{"pose": "peace"}', wait=5)
            eventually(lambda: sim.firmware.targets == (180, 180, 0, 0, 0), 10, "peace")
            eventually(lambda: device.reported.angles == (180, 180, 0, 0, 0), 10, "reported")
            eventually(lambda: watcher.last(TOPICS.bridge_state) is not None, 5, "bridge state")
            eventually(lambda: watcher.last(t.availability) is not None, 5, "availability")
            assert arbiter.client.connected
            assert device.client.connected
            assert watcher.last(t.availability) == b"online"
            assert watcher.last(TOPICS.bridge_state) == b"online"
            assert b"offline" not in watcher.payloads(t.availability)
        finally:
            operator.stop()
            watcher.close()


# -- passwords are never shown ---------------------------------------------------------------------

SECRET = "S3cr3t-pa55word"


@pytest.mark.parametrize(
    "args",
    [
        ["state", "--broker", f"mqtt://alice:{SECRET}@127.0.0.1:99999"],
        ["state", "--broker", f"mqtt://alice:{SECRET}@:1883"],
        ["state", "--broker", f"ftp://alice:{SECRET}@127.0.0.1"],
        ["set", "index", "90", "--broker", f"mqtt://alice:{SECRET}@127.0.0.1:1", "-t", "0.5"],
        ["health", "arbiter", "--broker", f"mqtt://alice:{SECRET}@127.0.0.1:1", "-t", "0.5"],
        ["watch", "--for", "0.1", "--broker", f"ws://alice:{SECRET}@127.0.0.1:1/mqtt"],
    ],
    ids=["bad-port", "no-host", "bad-scheme", "unreachable", "health", "websockets"],
)
def test_errors_never_show_the_password(args: list[str]) -> None:
    result = CliRunner().invoke(app, args)
    assert result.exit_code != 0
    assert result.output.startswith("error: ")
    assert SECRET not in result.output


def test_a_refused_login_never_shows_the_password(secured: SecuredBroker) -> None:
    url = secured.url("viewer", password=SECRET)
    result = CliRunner().invoke(app, ["state", "--broker", url, "-t", "2"])
    assert result.exit_code == 4  # the broker refused us: said at once, no password shown
    assert "mqtt://viewer@127.0.0.1" in result.output
    assert SECRET not in result.output


def test_up_on_an_external_broker_never_shows_the_password(amqtt_broker: AmqttBroker) -> None:
    """The banner of `hand-mqtt up --broker URL` names the broker without its password (the
    anonymous embedded broker lets any user name in)."""
    base = f"t{uuid.uuid4().hex[:10]}"
    url = f"mqtt://alice:{SECRET}@127.0.0.1:{amqtt_broker.port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "hand_mqtt", "up", "--no-live", "--base", base, "--broker", url],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
    try:
        assert process.stdout is not None
        seen = ""
        while "Ctrl-C stops everything" not in seen:
            line = process.stdout.readline()
            assert line, f"hand-mqtt up ended: {seen}"
            seen += line
        assert f"mqtt://alice@127.0.0.1:{amqtt_broker.port}" in seen
        assert f"mosquitto_pub -h 127.0.0.1 -p {amqtt_broker.port} " in seen
        assert SECRET not in seen
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


# -- client ids, device accounts, Home Assistant ----------------------------------------------


def test_service_client_ids_are_never_readable(secured: SecuredBroker) -> None:
    """MQTT hands a client id to the newest connection that claims it, so knowing a service's
    id lets any login knock the service off (Mosquitto: "already connected, closing old
    connection"). No role can read a service's id anywhere: not in ``reported``, not on the
    echo topics. Then every string seen is tried as a client id, and the services never notice.
    """
    hand = unique_hand()
    t = TOPICS.hand(hand)
    spies = [
        Watcher(secured.url(user), "#", f"hand/{hand}/#", "hand/bridge/#")
        for user in ("viewer", "operator", "homeassistant")
    ]
    with services(secured, hand) as (arbiter, device, _sim):
        operator = client(secured.url("operator"), "operator")
        try:
            operator.publish(t.set, b'{"pose": "okay", "transaction": "seen"}', wait=5)
            eventually(lambda: device.reported.angles == (0, 180, 180, 180, 0), 10, "okay")
            for spy in spies:
                eventually(functools.partial(spy.on, t.reported), 5, "reported seen")
            seen = [
                text
                for spy in spies
                for m in spy.messages
                for text in (m.topic, m.payload.decode("utf-8", "replace"))
            ]
            secret_ids = {arbiter.client.client_id, device.client.client_id}
            assert not [text for text in seen if any(i in text for i in secret_ids)]
            # Whatever an attacker could have picked up, tried as a client id.
            words = {w for text in seen for w in re.findall(r"[\w.-]{6,}", text)}
            candidates = words | {w.rsplit("-", 1)[0] for w in words if "-" in w}
            watcher = Watcher(secured.url("viewer"), t.availability, TOPICS.bridge_state)
            try:
                for candidate in sorted(candidates):
                    with RawClient(secured.port) as thief:
                        thief.connect(
                            candidate,
                            username="operator",
                            password=secured.passwords["operator"],
                        )
                operator.publish(t.set, b'{"pose": "peace"}', wait=5)
                eventually(lambda: device.reported.angles == (180, 180, 0, 0, 0), 10, "peace")
                eventually(lambda: watcher.last(TOPICS.bridge_state) is not None, 5, "bridge")
                assert watcher.payloads(t.availability) == [b"online"]
                assert watcher.payloads(TOPICS.bridge_state) == [b"online"]
            finally:
                watcher.close()
        finally:
            operator.stop()
            for spy in spies:
                spy.close()


def test_a_device_account_drives_only_its_own_hand(secured: SecuredBroker) -> None:
    """Another hand's device account can neither claim this hand nor say it is offline."""
    hand, other = unique_hand(), unique_hand()
    t, o = TOPICS.hand(hand), TOPICS.hand(other)
    forged = Reported(link="down", owner="evil", claimed=4102444800.0)
    with services(secured, hand) as (_arbiter, device, sim):
        watcher = Watcher(secured.url("viewer"), f"hand/{hand}/#", f"hand/{other}/#")
        intruder = MqttClient(
            BrokerUrl.parse(secured.url(f"device-{other}")),
            name="intruder",
            will=Will(t.availability, b"offline", qos=1, retain=True),
        )
        try:
            intruder.connect()
            intruder.publish(t.reported, forged.model_dump_json(), retain=True, wait=5)
            intruder.publish(t.availability, b"offline", retain=True, wait=5)
            intruder.publish(t.state, b'{"index": 0, "version": 99}', retain=True, wait=5)
            # Its own hand is open to it: seen after anything above would have been.
            intruder.publish(o.reported, forged.model_dump_json(), retain=True, wait=5)
            eventually(lambda: watcher.on(o.reported), 10, "the intruder's own reported")
            intruder.abort()  # its will on our availability is dropped too
            sentinel = MqttClient(
                BrokerUrl.parse(secured.url(f"device-{other}")),
                name="sentinel",
                will=Will(o.availability, b"gone", qos=1, retain=False),
            )
            sentinel.connect()
            sentinel.abort()
            eventually(lambda: watcher.payloads(o.availability) == [b"gone"], 10, "its will")
            assert not [m for m in watcher.on(t.reported) if b"evil" in m.payload]
            assert b"offline" not in watcher.payloads(t.availability)
            assert not [m for m in watcher.on(t.state) if b'"version": 99' in m.payload]
            assert not device.taken_over.is_set()
            assert sim.firmware.targets == OPEN
        finally:
            intruder.stop()
            watcher.close()


def test_a_device_that_steps_down_never_leaves_online_behind(secured: SecuredBroker) -> None:
    """A newer claim to take over in ``reported`` makes the device service step down. If no
    service stands behind that claim, ``availability`` must end ``offline``, not a stale
    ``online``."""
    hand = unique_hand()
    t = TOPICS.hand(hand)
    forged = Reported(
        link="down", owner="nobody-runs-this", claimed=time.time() + 3600, takeover=True
    )
    with services(secured, hand) as (_arbiter, device, _sim):
        watcher = Watcher(secured.url("viewer"), t.availability)
        same_account = client(secured.url(f"device-{hand}"), "same-account")
        try:
            same_account.publish(t.reported, forged.model_dump_json(), retain=True, wait=5)
            assert device.taken_over.wait(10), "the device service did not step down"
            eventually(lambda: watcher.last(t.availability) == b"offline", 10, "offline")
        finally:
            same_account.stop()
            watcher.close()


def test_homeassistant_discovery_with_the_shipped_rights(secured: SecuredBroker) -> None:
    """`arbiter --homeassistant` logged in as the arbiter announces the hand; Home Assistant,
    logged in with the homeassistant role, reads the configs, says it is online and commands."""
    hand = unique_hand()
    t = TOPICS.hand(hand)
    prefix = "homeassistant"
    expected = set(discovery_configs(TOPICS, hand, PoseBook(), prefix=prefix))
    with services(secured, hand) as (arbiter, _device, sim):
        discovery = Discovery(arbiter.client, topics=TOPICS, hands=[hand], prefix=prefix)
        home = Watcher(secured.url("homeassistant"), f"{prefix}/+/+/config")
        try:
            discovery.start()
            eventually(lambda: expected <= {m.topic for m in home.messages}, 10, "the configs")
            before = discovery.published
            home.client.publish(f"{prefix}/status", b"online", wait=5)
            eventually(lambda: discovery.published > before, 10, "announced again")
            home.client.publish(t.finger_set("index"), b"42", wait=5)
            eventually(lambda: sim.firmware.targets[0] == 42, 10, "index 42")
        finally:
            discovery.remove()
            discovery.stop()
            home.close()


def test_a_viewer_subscribed_to_everything_reads_the_hands_and_nothing_else(
    secured: SecuredBroker,
) -> None:
    """Both brokers accept any subscription and check each message, retained ones included."""
    hand = unique_hand()
    t = TOPICS.hand(hand)
    with services(secured, hand) as _running:
        viewer = Watcher(secured.url("viewer"), "#")
        try:
            eventually(lambda: viewer.on(t.state) and viewer.on(t.reported), 10, "retained")
            assert viewer.last(t.availability) == b"online"
            assert not [m.topic for m in viewer.messages if "/sync/" in m.topic]
            assert not [m.topic for m in viewer.messages if not m.topic.startswith("hand/")]
        finally:
            viewer.close()


def test_who_may_ask_the_arbiter(secured: SecuredBroker) -> None:
    """Requests to the arbiter (ping, retire): people who command and the services ask, a
    viewer only reads the answers."""
    hand = unique_hand()
    with services(secured, hand):
        viewer = Watcher(secured.url("viewer"), TOPICS.bridge_response("+"))
        askers = {user: client(secured.url(user), user) for user in ["viewer", "operator"]}
        try:
            for user, mqtt in askers.items():
                mqtt.publish(TOPICS.bridge_request("ping"), f'{{"transaction": "{user}"}}', wait=5)
            askers["operator"].publish(
                TOPICS.bridge_request("ping"), b'{"transaction": "last"}', wait=5
            )
            eventually(lambda: len(viewer.on(TOPICS.bridge_response("ping"))) >= 2, 10, "pongs")
            answered = [
                json.loads(m.payload)["transaction"]
                for m in viewer.on(TOPICS.bridge_response("ping"))
            ]
            assert answered == ["operator", "last"]
        finally:
            for mqtt in askers.values():
                mqtt.stop()
            viewer.close()
        for user, code in [("arbiter", 0), ("operator", 0), ("viewer", 1)]:
            result = CliRunner().invoke(
                app, ["health", "arbiter", "--broker", secured.url(user), "-t", "2"]
            )
            assert result.exit_code == code, (user, result.output)
