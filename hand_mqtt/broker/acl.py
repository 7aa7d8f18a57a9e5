"""Who may read and write which topic, with Mosquitto's ``acl_file`` rules.

:class:`AccessRules` reads the same ACL file Mosquitto reads (written by
:func:`hand_mqtt.accounts.render_acl`) and answers "may this client read/write this topic" for
the embedded broker's authenticated mode.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from hand_mqtt.errors import ConfigError

__all__ = ["READ", "WRITE", "AccessRules"]

READ: Final = 1
WRITE: Final = 2


def _matches(topic_filter: str, topic: str) -> bool:
    """MQTT matching of a concrete ``topic`` against a filter with ``+`` and ``#``."""
    if topic.startswith("$") != topic_filter.startswith("$"):
        return False
    want = topic_filter.split("/")
    have = topic.split("/")
    for i, level in enumerate(want):
        if level == "#":
            return True
        if i >= len(have):
            return False
        if level not in ("+", have[i]):
            return False
    return len(want) == len(have)


@dataclass(frozen=True, slots=True)
class _Rule:
    access: int  # READ | WRITE, or 0 for deny
    topic: str


@dataclass(slots=True)
class AccessRules:
    """An ACL file, parsed: anonymous rules, per-user rules and patterns (``%u``, ``%c``).

    The checks follow Mosquitto 2's ``acl_file``: ``deny`` lines first, then the user's own
    ``topic`` lines (those before any ``user`` line are the anonymous client's), then the
    ``pattern`` lines; patterns never apply to a user name or client id holding ``+`` or ``#``,
    and ``%u`` patterns never to a client without a user name. Anything not granted is denied.
    """

    users: dict[str | None, list[_Rule]] = field(default_factory=dict)
    patterns: list[_Rule] = field(default_factory=list)

    @classmethod
    def parse(cls, text: str) -> AccessRules:
        rules = cls()
        user: str | None = None
        for number, raw in enumerate(text.splitlines(), 1):
            line = raw.rstrip()
            if not line or line.startswith("#"):
                continue
            keyword, _, rest = line.partition(" ")
            if keyword == "user":
                user = rest.strip()
                rules.users.setdefault(user, [])
                continue
            if keyword not in ("topic", "pattern"):
                raise ConfigError(f"ACL line {number}: unknown keyword {keyword!r}")
            access_word, _, topic = rest.partition(" ")
            if not topic:
                access_word, topic = "readwrite", access_word
            accesses = {"read": READ, "write": WRITE, "readwrite": READ | WRITE, "deny": 0}
            if access_word not in accesses:
                raise ConfigError(f"ACL line {number}: unknown access {access_word!r}")
            topic = topic.strip()
            if not topic:
                raise ConfigError(f"ACL line {number}: no topic")
            rule = _Rule(accesses[access_word], topic)
            target = rules.patterns if keyword == "pattern" else rules.users.setdefault(user, [])
            # Like Mosquitto: deny rules are checked before the grants.
            if rule.access == 0:
                target.insert(0, rule)
            else:
                target.append(rule)
        return rules

    @classmethod
    def from_file(cls, path: Path) -> AccessRules:
        try:
            return cls.parse(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read the ACL file {path}: {exc.strerror}") from None

    def _rules_for(self, username: str | None, client_id: str) -> Iterable[_Rule]:
        yield from self.users.get(username, [])
        if (username is not None and ("+" in username or "#" in username)) or (
            "+" in client_id or "#" in client_id
        ):
            return
        for rule in self.patterns:
            if "%u" in rule.topic and username is None:
                continue
            topic = rule.topic.replace("%c", client_id)
            if username is not None:
                topic = topic.replace("%u", username)
            yield _Rule(rule.access, topic)

    def allowed(self, username: str | None, client_id: str, topic: str, access: int) -> bool:
        """Whether the client may ``access`` (:data:`READ` or :data:`WRITE`) ``topic``."""
        for rule in self._rules_for(username, client_id):
            if _matches(rule.topic, topic):
                if rule.access == 0:
                    return False
                if rule.access & access:
                    return True
        return False
