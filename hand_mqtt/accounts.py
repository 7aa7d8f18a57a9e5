"""Users, passwords and topic rights, in the file formats Mosquitto reads.

Both brokers read the same two files:

- the **password file**: one ``user:hash`` line per user, the hash in Mosquitto 2's ``$7$``
  format (PBKDF2-HMAC-SHA512: ``$7$<iterations>$<base64 salt>$<base64 digest>``);
  ``mosquitto_passwd`` writes the same thing;
- the **ACL file**: Mosquitto's ``acl_file`` syntax (``user``, ``topic``, ``pattern``), written
  from an account per user by :func:`render_acl`. The role (and a device account's hand) is
  kept in a ``# role:`` comment above each ``user`` line, so the file can be read back
  (:func:`read_acl`) and rewritten.

:class:`AccessRules` answers "may this client read/write this topic" with Mosquitto's rules,
for the embedded broker's authenticated mode (see ``hand_mqtt.broker.embedded``).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import enum
import hashlib
import hmac
import os
import re
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from hand_mqtt.errors import ConfigError
from hand_mqtt.model import FINGERS
from hand_mqtt.topics import BRIDGE, DISCOVERY_PREFIX, Topics, validate_hand_name

__all__ = [
    "DEFAULT_ITERATIONS",
    "Account",
    "AclFile",
    "Grant",
    "Role",
    "check_discovery_prefix",
    "default_users",
    "hash_password",
    "new_password",
    "read_acl",
    "read_password_file",
    "render_acl",
    "role_grants",
    "verify_password",
    "write_password_file",
]

DEFAULT_ITERATIONS: Final = 10_000
"""PBKDF2 rounds for new hashes (``mosquitto_passwd`` uses 101; any count is read back)."""
_SALT_BYTES: Final = 12
_USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")
_ROLE_COMMENT = re.compile(r"^#\s*role:\s*(\S+)(?:\s+(\S+))?\s*$")
_PREFIX = re.compile(r"^[A-Za-z0-9_-]{1,64}(/[A-Za-z0-9_-]{1,64})*$")


class Role(enum.StrEnum):
    """What a user may do. Services get their own role; people get operator or viewer."""

    arbiter = "arbiter"
    """Reads commands and the retained state; the only writer of desired state and errors;
    announces the hands to Home Assistant."""
    device = "device"
    """For one hand: reads its desired state; the only writer of its ``reported`` and
    ``availability``."""
    operator = "operator"
    """Sends commands and reads the hands' topics."""
    viewer = "viewer"
    """Reads the hands' topics; sends nothing."""
    homeassistant = "homeassistant"
    """Home Assistant: an operator that also reads the discovery configs and says when it is
    online on ``<prefix>/status``."""
    none = "none"
    """Can log in and see nothing (a disabled account)."""


@dataclass(frozen=True, slots=True)
class Account:
    """A user's role and, for a device account, the one hand it drives."""

    role: Role
    hand: str | None = None

    def __post_init__(self) -> None:
        if self.role is Role.device:
            if self.hand is None:
                raise ConfigError("a device account drives one hand: give its hand")
            validate_hand_name(self.hand)
        elif self.hand is not None:
            raise ConfigError(f"only a device account has a hand, not a {self.role.value} one")

    def describe(self) -> str:
        """``device hand1``, ``operator``: what the ``# role:`` comment of the ACL says."""
        return self.role.value if self.hand is None else f"{self.role.value} {self.hand}"


@dataclass(frozen=True, slots=True)
class Grant:
    """One ``topic`` line of the ACL file."""

    access: str  # "read", "write" or "readwrite"
    topic: str

    def line(self) -> str:
        return f"topic {self.access} {self.topic}"


def _readable(b: str) -> list[Grant]:
    """What people read: every topic of every hand (``<base>/<hand>/<topic>``), the command
    topics of fingers and poses, and the arbiter's ``<base>/bridge/<topic>``.

    Not ``<base>/#``: that would include each client's echo topic,
    ``<base>/bridge/sync/<client id>``, and so every client's id, which anyone holding a login
    could then use to knock that client off the broker (MQTT gives a client id to the newest
    connection that claims it).
    """
    return [
        Grant("read", f"{b}/+/+"),
        Grant("read", f"{b}/+/+/set"),
        Grant("read", f"{b}/{BRIDGE}/response/+"),
        Grant("read", f"{b}/{BRIDGE}/lease/+"),
    ]


def _commands(b: str) -> list[Grant]:
    """Commands to the hands, and requests to the arbiter itself (ping, retire)."""
    return [
        Grant("write", f"{b}/+/set"),
        Grant("write", f"{b}/+/+/set"),
        Grant("write", f"{b}/{BRIDGE}/request/+"),
    ]


def _requests(b: str, access: str) -> list[Grant]:
    return [
        Grant(access, f"{b}/{BRIDGE}/request/+"),
        Grant(access, f"{b}/{BRIDGE}/response/+"),
    ]


def role_grants(
    account: Account | Role, base: str = "hand", discovery_prefix: str = DISCOVERY_PREFIX
) -> list[Grant]:
    """The ``topic`` lines an account gets (see docs/security.md for the table)."""
    account = account if isinstance(account, Account) else Account(account)
    b = Topics(base).base
    p = discovery_prefix
    match account.role:
        case Role.arbiter:
            return [
                Grant("read", f"{b}/+/set"),
                Grant("read", f"{b}/+/+/set"),
                Grant("readwrite", f"{b}/+/state"),
                *(Grant("write", f"{b}/+/{finger}") for finger in FINGERS),
                # Read too: an arbiter standing by learns from them what was answered.
                Grant("readwrite", f"{b}/+/error"),
                # Its own namespace: bridge/state, poses, gestures... (not the echo topics,
                # one level deeper).
                Grant("readwrite", f"{b}/{BRIDGE}/+"),
                *_requests(b, "readwrite"),
                # Which arbiter serves which hand, and which arbiters run.
                Grant("readwrite", f"{b}/{BRIDGE}/lease/+"),
                Grant("readwrite", f"{b}/{BRIDGE}/arbiter/+"),
                Grant("write", f"{p}/+/+/config"),
                Grant("read", f"{p}/status"),
            ]
        case Role.device:
            h = f"{b}/{account.hand}"
            return [
                Grant("read", f"{h}/state"),
                Grant("readwrite", f"{h}/reported"),
                Grant("readwrite", f"{h}/availability"),
            ]
        case Role.operator:
            return [*_commands(b), *_readable(b)]
        case Role.viewer:
            return _readable(b)
        case Role.homeassistant:
            return [
                *_commands(b),
                *_readable(b),
                Grant("read", f"{p}/#"),
                Grant("write", f"{p}/status"),
            ]
        case Role.none:
            return []
    raise ConfigError(f"unknown role {account.role!r}")  # pragma: no cover - exhaustive match


def default_users() -> dict[str, Account]:
    """The accounts the shipped ``broker/acl`` describes: one per role (the device account
    for the hand ``hand1``)."""
    return {
        "arbiter": Account(Role.arbiter),
        "device": Account(Role.device, "hand1"),
        "homeassistant": Account(Role.homeassistant),
        "operator": Account(Role.operator),
        "viewer": Account(Role.viewer),
    }


def check_username(name: str) -> str:
    """Return ``name`` if it can be a user name here, else raise :class:`ConfigError`."""
    if not _USERNAME.match(name):
        raise ConfigError(f"user name {name!r} must be 1-64 letters, digits, '.', '_', '@' or '-'")
    return name


# -- the ACL file ------------------------------------------------------------------------------


def render_acl(
    users: Mapping[str, Account | Role],
    base: str = "hand",
    discovery_prefix: str = DISCOVERY_PREFIX,
) -> str:
    """The ACL file for ``users`` (name → account, or role) under the base topic ``base``."""
    b = Topics(base).base
    prefix = check_discovery_prefix(discovery_prefix)
    lines = [
        "# Mosquitto ACL for hand-mqtt. Written by `hand-mqtt users`; edit it with that command.",
        f"# base: {b}",
        f"# discovery prefix: {prefix}",
        "#",
        "# No topic lines before the first user: a client without a user name gets no rights.",
        "# Every client may use its own echo topic (the client id is substituted for %c), and",
        "# only its own: the services and the CLI use it to know that the retained messages",
        "# have arrived, and nobody else reads it, so nobody learns another client's id.",
        f"pattern readwrite {b}/{BRIDGE}/sync/%c",
    ]
    for name in sorted(users):
        entry = users[name]
        account = entry if isinstance(entry, Account) else Account(entry)
        lines += ["", f"# role: {account.describe()}", f"user {check_username(name)}"]
        lines += [grant.line() for grant in role_grants(account, b, prefix)]
    return "\n".join(lines) + "\n"


@dataclass(slots=True)
class AclFile:
    """What :func:`read_acl` reads back from a file :func:`render_acl` wrote."""

    base: str | None = None
    discovery_prefix: str | None = None
    users: dict[str, Account] = field(default_factory=dict)


def read_acl(text: str) -> AclFile:
    """Read back the base topic, the discovery prefix and the users' accounts."""
    found = AclFile()
    pending: Account | None = None
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("# base:"):
            found.base = line.split(":", 1)[1].strip()
            continue
        if line.startswith("# discovery prefix:"):
            found.discovery_prefix = line.split(":", 1)[1].strip()
            continue
        comment = _ROLE_COMMENT.match(line)
        if comment:
            try:
                role = Role(comment.group(1))
            except ValueError:
                raise ConfigError(f"unknown role {comment.group(1)!r} in the ACL file") from None
            if role is Role.device and comment.group(2) is None:
                raise ConfigError(
                    "a device account in the ACL file names no hand (a file from an older "
                    "hand-mqtt): add it again with `hand-mqtt users add NAME --role device "
                    "--hand HAND`"
                )
            pending = Account(role, comment.group(2))
            continue
        if line.startswith("user "):
            name = line[5:].strip()
            if pending is None:
                raise ConfigError(
                    f"user {name!r} in the ACL file has no '# role:' line above it; "
                    "it was edited by hand: add the line or manage it with `hand-mqtt users`"
                )
            found.users[name] = pending
            pending = None
    return found


def check_discovery_prefix(prefix: str) -> str:
    """Return ``prefix`` if it can be Home Assistant's discovery prefix, else raise."""
    if not _PREFIX.match(prefix):
        raise ConfigError(
            f"discovery prefix {prefix!r} must be '/'-separated letters, digits, '-' or '_'"
        )
    return prefix


# -- passwords -------------------------------------------------------------------------------


def new_password() -> str:
    """A random password that needs no escaping in a URL, a shell or a YAML file."""
    return secrets.token_urlsafe(24)


def hash_password(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """Hash ``password`` the way Mosquitto 2 does (``$7$``, PBKDF2-HMAC-SHA512)."""
    if not 1 <= iterations <= 10_000_000:
        raise ConfigError("iterations must be from 1 to 10,000,000")
    salt = salt if salt is not None else os.urandom(_SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
    return f"$7${iterations}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether ``password`` matches a ``$7$`` (Mosquitto 2) or ``$6$`` (Mosquitto 1.x) hash."""
    parts = hashed.split("$")
    try:
        if len(parts) == 5 and parts[1] == "7":
            iterations = int(parts[2])
            if not 1 <= iterations <= 10_000_000:
                return False
            salt = base64.b64decode(parts[3], validate=True)
            expected = base64.b64decode(parts[4], validate=True)
            actual = hashlib.pbkdf2_hmac("sha512", password.encode("utf-8"), salt, iterations)
        elif len(parts) == 4 and parts[1] == "6":
            salt = base64.b64decode(parts[2], validate=True)
            expected = base64.b64decode(parts[3], validate=True)
            actual = hashlib.sha512(password.encode("utf-8") + salt).digest()
        else:
            return False
    except (ValueError, binascii.Error):
        return False
    return hmac.compare_digest(actual, expected)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def read_password_file(path: Path) -> dict[str, str]:
    """``{user: hash}`` from a Mosquitto password file (an absent file has no users)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(f"cannot read the password file {path}: {exc.strerror}") from None
    users: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, hashed = line.partition(":")
        if not sep or not hashed.startswith("$"):
            raise ConfigError(f"{path}:{number}: expected 'user:$7$...' (a hashed password)")
        users[name] = hashed
    return users


def write_password_file(path: Path, users: Mapping[str, str]) -> None:
    """Replace the password file atomically, keeping its mode and group (new files: 0600)."""
    text = "".join(f"{name}:{hashed}\n" for name, hashed in sorted(users.items()))
    write_private(path, text)


def write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically; a new file is private, an old one keeps its mode."""
    try:
        old = path.stat()
    except FileNotFoundError:
        mode, gid = 0o600, -1
    else:
        mode, gid = old.st_mode & 0o777, old.st_gid
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, mode)
        if gid != -1:
            with contextlib.suppress(OSError):
                os.chown(tmp, -1, gid)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
