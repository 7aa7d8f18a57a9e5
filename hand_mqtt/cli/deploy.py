"""Commands for running hand-mqtt in production: users and rights, health checks.

``hand-mqtt users add NAME --role ROLE`` writes the Mosquitto password file and the ACL file
(both brokers read them); ``hand-mqtt health arbiter|device`` exits 0 when the service's retained
availability says ``online``, ``hand-mqtt health web`` when the page is served, for container
health checks and monitoring.
"""

from __future__ import annotations

import enum
import json
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated

import typer

from hand_mqtt.accounts import (
    DEFAULT_ITERATIONS,
    Account,
    AclFile,
    Role,
    check_discovery_prefix,
    check_username,
    hash_password,
    new_password,
    read_acl,
    read_password_file,
    render_acl,
    write_password_file,
    write_private,
)
from hand_mqtt.errors import ConfigError
from hand_mqtt.model import BridgeResponse, Reported
from hand_mqtt.mqtt import BrokerUrl, Message, MqttClient
from hand_mqtt.topics import DISCOVERY_PREFIX, ONLINE, Topics, validate_hand_name

from .base import exit_status
from .common import (
    DEFAULT_BASE,
    DEFAULT_BROKER,
    DEFAULT_HAND,
    BaseOption,
    BrokerOption,
    CaFileOption,
    HandOption,
    VerboseOption,
    broker_url,
    fail,
    handle_errors,
    setup_logging,
    topics,
)

__all__ = ["app", "users_app"]

app = typer.Typer()
users_app = typer.Typer(
    help="Manage broker users: passwords (Mosquitto's password file) and roles (the ACL file).",
    no_args_is_help=True,
)

PasswordFileOption = Annotated[
    Path,
    typer.Option(
        "--password-file",
        envvar="HAND_MQTT_PASSWORD_FILE",
        metavar="FILE",
        help="Mosquitto password file to update.",
        dir_okay=False,
    ),
]
AclFileOption = Annotated[
    Path,
    typer.Option(
        "--acl-file",
        envvar="HAND_MQTT_ACL_FILE",
        metavar="FILE",
        help="Mosquitto ACL file to update.",
        dir_okay=False,
    ),
]
PasswordStdinOption = Annotated[
    bool,
    typer.Option(
        "--password-stdin",
        help="Read the password from the first line of stdin instead of making one up.",
    ),
]
DEFAULT_PASSWORD_FILE = Path("broker/passwd")
DEFAULT_ACL_FILE = Path("broker/acl")


def _read_acl(path: Path) -> AclFile:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return AclFile()
    except OSError as exc:
        raise ConfigError(f"cannot read the ACL file {path}: {exc.strerror}") from None
    return read_acl(text)


def _password(from_stdin: bool) -> tuple[str, bool]:
    """The password to set, and whether we made it up (then it must be shown once)."""
    if not from_stdin:
        return new_password(), True
    line = sys.stdin.readline().rstrip("\r\n")
    if not line:
        raise ConfigError("no password on stdin")
    return line, False


@users_app.command("add", epilog=exit_status("users add"))
def users_add(
    name: Annotated[str, typer.Argument(help="User name (what clients give as their user).")],
    role: Annotated[
        Role,
        typer.Option(
            "--role",
            "-r",
            metavar="arbiter|device|operator|viewer|none",
            help="What the user may do.",
        ),
    ],
    hand: Annotated[
        str,
        typer.Option(
            "--hand",
            envvar="HAND_MQTT_HAND",
            metavar="NAME",
            help="device: the one hand this account drives.",
        ),
    ] = DEFAULT_HAND,
    password_stdin: PasswordStdinOption = False,
    password_file: PasswordFileOption = DEFAULT_PASSWORD_FILE,
    acl_file: AclFileOption = DEFAULT_ACL_FILE,
    base: BaseOption = DEFAULT_BASE,
    discovery_prefix: Annotated[
        str,
        typer.Option(
            "--discovery-prefix",
            envvar="HAND_MQTT_DISCOVERY_PREFIX",
            metavar="TOPIC",
            help="Home Assistant's discovery prefix (what the arbiter may announce under).",
        ),
    ] = DISCOVERY_PREFIX,
    iterations: Annotated[
        int,
        typer.Option(metavar="N", help="PBKDF2 rounds for the hash.", min=1, max=10_000_000),
    ] = DEFAULT_ITERATIONS,
) -> None:
    """Add a user (or change an existing one's role and password).

    A device account drives one hand (--hand). A new random password is printed on stdout,
    once; nothing else is. Keep it in the service's environment (.env for docker compose) or
    hand it to the person.
    """
    with handle_errors():
        check_username(name)
        topics(base)
        check_discovery_prefix(discovery_prefix)
        account = Account(role, validate_hand_name(hand) if role is Role.device else None)
        acl = _read_acl(acl_file)
        if acl.base is not None and acl.base != base:
            raise ConfigError(
                f"{acl_file} is for base topic {acl.base!r}, not {base!r}; pass --base {acl.base}"
            )
        if acl.discovery_prefix is not None and acl.discovery_prefix != discovery_prefix:
            raise ConfigError(
                f"{acl_file} is for the discovery prefix {acl.discovery_prefix!r}, not "
                f"{discovery_prefix!r}; pass --discovery-prefix {acl.discovery_prefix}"
            )
        password, made_up = _password(password_stdin)
        users = read_password_file(password_file)
        users[name] = hash_password(password, iterations=iterations)
        acl.users[name] = account
        write_password_file(password_file, users)
        write_private(acl_file, render_acl(acl.users, base, discovery_prefix))
        if acl_file.stat().st_mode & 0o077 == 0:
            # The ACL holds no secret, and the broker (another user) must read it.
            acl_file.chmod(0o644)
    typer.echo(
        f"{name}: role {account.describe()}; {password_file} and {acl_file} updated", err=True
    )
    if made_up:
        typer.echo(password)


@users_app.command("passwd", epilog=exit_status("users passwd"))
def users_passwd(
    name: Annotated[str, typer.Argument(help="An existing user.")],
    password_stdin: PasswordStdinOption = False,
    password_file: PasswordFileOption = DEFAULT_PASSWORD_FILE,
    iterations: Annotated[
        int,
        typer.Option(metavar="N", help="PBKDF2 rounds for the hash.", min=1, max=10_000_000),
    ] = DEFAULT_ITERATIONS,
) -> None:
    """Give an existing user a new password (printed on stdout when made up)."""
    with handle_errors():
        users = read_password_file(password_file)
        if name not in users:
            raise ConfigError(f"{name!r} is not in {password_file}; add it with `users add`")
        password, made_up = _password(password_stdin)
        users[name] = hash_password(password, iterations=iterations)
        write_password_file(password_file, users)
    typer.echo(f"{name}: new password in {password_file}", err=True)
    if made_up:
        typer.echo(password)


@users_app.command("remove", epilog=exit_status("users remove"))
def users_remove(
    name: Annotated[str, typer.Argument(help="The user to remove.")],
    password_file: PasswordFileOption = DEFAULT_PASSWORD_FILE,
    acl_file: AclFileOption = DEFAULT_ACL_FILE,
) -> None:
    """Remove a user from both files."""
    with handle_errors():
        users = read_password_file(password_file)
        acl = _read_acl(acl_file)
        if name not in users and name not in acl.users:
            raise ConfigError(f"there is no user {name!r}")
        users.pop(name, None)
        acl.users.pop(name, None)
        write_password_file(password_file, users)
        write_private(
            acl_file,
            render_acl(
                acl.users, acl.base or DEFAULT_BASE, acl.discovery_prefix or DISCOVERY_PREFIX
            ),
        )
    typer.echo(f"{name}: removed", err=True)


@users_app.command("list", epilog=exit_status("users list"))
def users_list(
    password_file: PasswordFileOption = DEFAULT_PASSWORD_FILE,
    acl_file: AclFileOption = DEFAULT_ACL_FILE,
) -> None:
    """List users, their roles, and whether they have a password."""
    with handle_errors():
        users = read_password_file(password_file)
        acl = _read_acl(acl_file)
    typer.echo(f"base topic: {acl.base or DEFAULT_BASE}")
    for name in sorted(set(users) | set(acl.users)):
        role = acl.users[name].describe() if name in acl.users else "(no rights)"
        note = "" if name in users else "  (no password: cannot log in)"
        typer.echo(f"{name:<24} {role}{note}")


class Service(enum.StrEnum):
    arbiter = "arbiter"
    device = "device"
    web = "web"


@app.command(rich_help_panel="Production and hardware", epilog=exit_status("health"))
def health(
    service: Annotated[
        Service, typer.Argument(metavar="arbiter|device|web", help="The service to check.")
    ],
    require_link: Annotated[
        bool,
        typer.Option(
            "--require-link", help="device: also require the serial link to the hand to be up."
        ),
    ] = False,
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", "-t", metavar="SECONDS", help="Seconds to wait for an answer.", min=0.1
        ),
    ] = 5.0,
    url: Annotated[
        str,
        typer.Option(
            "--url", envvar="HAND_MQTT_WEB_URL", metavar="URL", help="web: the page's address."
        ),
    ] = "http://127.0.0.1:8080/",
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    hand: HandOption = DEFAULT_HAND,
    verbose: VerboseOption = 0,
) -> None:
    """Exit 0 when the service says it is online (its retained availability), else 1.

    arbiter: <base>/bridge/state; device: <base>/<hand>/availability (and, with
    --require-link, reported.link); web: the page at --url is served (its settings come back).
    Meant for container health checks and monitoring.
    """
    setup_logging(verbose, service=False)
    if service is Service.web:
        from hand_mqtt.clients.web import page_problem

        problem = page_problem(url, timeout)
        if problem is not None:
            raise fail(f"web: {problem}")
        typer.echo("web: serving")
        return
    with handle_errors():
        layout = topics(base)
        hand_topics = layout.hand(validate_hand_name(hand))
        client = MqttClient(broker_url(broker, ca_file), name="health")
    watched = layout.bridge_state if service is Service.arbiter else hand_topics.availability
    seen: dict[str, bytes] = {}

    def keep(message: Message) -> None:
        seen[message.topic] = message.payload

    client.subscribe(watched, keep)
    if service is Service.device and require_link:
        client.subscribe(hand_topics.reported, keep)
    wanted = [watched, hand_topics.reported] if require_link else [watched]
    started = time.monotonic()
    try:
        # A container health check knows 0 and 1 only: an unreachable broker is unhealthy.
        with handle_errors(broker_code=1):
            client.connect(timeout, wait_for_broker=False)
        client.wait_synced(
            layout.sync(client.client_id),
            max(0.1, timeout - (time.monotonic() - started)),
            have_all=lambda: all(topic in seen for topic in wanted),
        )
    finally:
        client.stop()
    problem = _problem(service, seen.get(watched), seen.get(hand_topics.reported), require_link)
    if problem is None and service is Service.arbiter:
        # A retained "online" may be older than the broker's last restart (it comes back from
        # the broker's disk before the arbiter reconnects, if it ever does): only an answer
        # proves the arbiter runs.
        with handle_errors(broker_code=1):
            answer = ask_arbiter(broker_url(broker, ca_file), layout, "ping", {}, timeout)
        if answer is None:
            problem = (
                "arbiter: bridge/state says online, but the arbiter does not answer (a broker "
                "restart it has not reconnected after? a login that may not send requests?)"
            )
    if problem is not None:
        raise fail(problem)
    typer.echo(f"{service.value}: online")


def ask_arbiter(
    url: BrokerUrl, layout: Topics, name: str, body: dict[str, object], timeout: float
) -> BridgeResponse | None:
    """Send the arbiter a request on ``bridge/request/<name>``; its answer, or None in time."""
    transaction = uuid.uuid4().hex[:16]
    answered = threading.Event()
    found: list[BridgeResponse] = []

    def on_answer(message: Message) -> None:
        try:
            response = BridgeResponse.model_validate_json(message.payload)
        except ValueError:
            return
        if response.transaction == transaction:
            found.append(response)
            answered.set()

    client = MqttClient(url, name=f"request-{name}")
    client.subscribe(layout.bridge_response(name), on_answer)
    try:
        client.connect(timeout, wait_for_broker=False)
        # The broker handles our subscription before our request, so the answer cannot pass us.
        client.publish(
            layout.bridge_request(name), json.dumps({**body, "transaction": transaction}), qos=1
        )
        answered.wait(timeout)
    finally:
        client.stop()
    return found[0] if found else None


@app.command(rich_help_panel="Production and hardware", epilog=exit_status("retire"))
def retire(
    hand: Annotated[
        str, typer.Argument(metavar="HAND", help="The hand to forget.", show_default=False)
    ],
    timeout: Annotated[
        float,
        typer.Option(
            "--timeout", "-t", metavar="SECONDS", help="Seconds to wait for an answer.", min=0.1
        ),
    ] = 5.0,
    broker: BrokerOption = DEFAULT_BROKER,
    ca_file: CaFileOption = None,
    base: BaseOption = DEFAULT_BASE,
    verbose: VerboseOption = 0,
) -> None:
    """Make an arbiter serving every hand (--all-hands) forget a hand and free its slot.

    Its retained state and finger topics are cleared; a later command to it starts afresh from
    an open hand at version 1. The hand does not move.
    """
    setup_logging(verbose, service=False)
    with handle_errors():
        layout = topics(base)
        answer = ask_arbiter(
            broker_url(broker, ca_file),
            layout,
            "retire",
            {"hand": validate_hand_name(hand)},
            timeout,
        )
    if answer is None:
        raise fail(f"no answer from the arbiter within {timeout:g} s (is it running?)")
    if answer.status != "ok":
        raise fail(f"the arbiter refused: {answer.error}")
    typer.echo(f"{layout.base}/{hand}: retired")


def _problem(
    service: Service, availability: bytes | None, reported: bytes | None, require_link: bool
) -> str | None:
    if availability is None:
        return f"{service.value}: no availability published yet (never started?)"
    if availability != ONLINE:
        return f"{service.value}: {availability.decode('utf-8', 'replace')[:40]}"
    if service is Service.device and require_link:
        try:
            link = Reported.model_validate_json(reported or b"").link
        except ValueError:
            return "device: online, but no readable reported state yet"
        if link != "up":
            return "device: online, but the serial link to the hand is down"
    return None
