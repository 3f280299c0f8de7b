"""Who may do what: ingest credentials stream calls on /call, dispatcher credentials watch /feed and act.

A credential is a random token shown once when it is made; the file keeps only its SHA-256 (the
tokens carry 192 random bits, so a fast hash is enough: a stolen file yields no token, and there is
no password to guess). The dispatcher's name in every action comes from here, never from a message.

`Credentials` is pure (no file, no clock of its own); `CredentialFile` is its edge: an atomically
rewritten JSON file, re-read when it changes, so `triage users remove` takes effect on a running
server without a restart.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path

ROLES = ("dispatcher", "ingest")
NAME = re.compile(r"^[\w.@-]{1,64}$")


class CredentialError(ValueError):
    """A bad credential file or a bad request to change it."""


@dataclass(frozen=True)
class Identity:
    name: str
    role: str


@dataclass(frozen=True)
class Verdict:
    """What a presented token is: an identity, or why it is refused (and so which HTTP status)."""
    identity: Identity | None
    reason: str = ""  # "missing", "unknown", "expired"


@dataclass(frozen=True)
class Admission:
    """The answer to a connection: HTTP status 200 (with the identity, None when the server is open),
    401 (no valid credential) or 403 (a valid credential of the other role)."""
    identity: Identity | None
    status: int
    message: str = ""


def new_token() -> str:
    return secrets.token_urlsafe(24)


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Credentials:
    """The configured credentials: an optional anonymous ingest token (`--token`) and named users."""

    def __init__(self, users: dict[str, dict] | None = None, ingest_token: str | None = None,
                 required: bool = False):
        self.users = dict(users or {})
        self.ingest_token = ingest_token
        # A server given a users file stays closed when the file is emptied: revoking the last
        # dispatcher must not open the door to everyone.
        self.required = required

    @property
    def configured(self) -> bool:
        return bool(self.required or self.ingest_token or self.users)

    def has_role(self, role: str) -> bool:
        return any(u["role"] == role for u in self.users.values()) or (role == "ingest" and bool(self.ingest_token))

    def identify(self, token: str | None, now: float) -> Verdict:
        if not token:
            return Verdict(None, "missing")
        if self.ingest_token and hmac.compare_digest(token, self.ingest_token):
            return Verdict(Identity("ingest", "ingest"))
        digest = _digest(token)
        for name, user in self.users.items():
            if hmac.compare_digest(digest, user["sha256"]):
                if user.get("expires") is not None and now >= user["expires"]:
                    return Verdict(None, "expired")
                return Verdict(Identity(name, user["role"]))
        return Verdict(None, "unknown")

    def admit(self, token: str | None, role: str, now: float) -> Admission:
        """May the holder of `token` take `role`? Open (no identity) when nothing is configured."""
        if not self.configured:
            return Admission(None, 200)
        verdict = self.identify(token, now)
        if verdict.identity is None:
            return Admission(None, 401, {"missing": "a credential is required (Authorization: Bearer, or ?token=)",
                                         "unknown": "unknown credential",
                                         "expired": "credential expired"}[verdict.reason])
        if verdict.identity.role != role:
            return Admission(None, 403, f"a {verdict.identity.role} credential cannot be used for {role}")
        return Admission(verdict.identity, 200)

    def add(self, name: str, role: str, now: float, expires_days: float | None = None) -> str:
        """A new credential for `name`; returns its token (the only time it exists in clear)."""
        if not NAME.fullmatch(name):
            raise CredentialError(f"bad name {name!r}: 1-64 letters, digits, '.', '_', '@' or '-'")
        if role not in ROLES:
            raise CredentialError(f"bad role {role!r}: expected one of {', '.join(ROLES)}")
        if name in self.users:
            raise CredentialError(f"{name!r} already exists; remove it first to issue a new credential")
        token = new_token()
        self.users[name] = {"role": role, "sha256": _digest(token), "created": now,
                            "expires": None if expires_days is None else now + expires_days * 86400}
        return token

    def remove(self, name: str) -> None:
        if self.users.pop(name, None) is None:
            raise CredentialError(f"no user {name!r}")


class CredentialFile:
    """The users file (JSON, mode 0600), re-read whenever its modification time or size changes."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._stamp: tuple | None = None
        self._users: dict[str, dict] = {}

    def users(self) -> dict[str, dict]:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return {}
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        if stamp != self._stamp:
            self._users, self._stamp = self._read(), stamp
        return self._users

    def _read(self) -> dict[str, dict]:
        try:
            data = json.loads(self.path.read_text())
            users = data["users"]
            for name, u in users.items():
                if u["role"] not in ROLES or not isinstance(u["sha256"], str):
                    raise ValueError(f"user {name!r}: bad role or hash")
            return users
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise CredentialError(f"{self.path}: not a triage users file ({e}); "
                                  f"expected {{\"users\": {{name: {{role, sha256, ...}}}}}}") from e

    def save(self, users: dict[str, dict]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"format_version": 1, "users": users}, f, indent=1, sort_keys=True)
        os.replace(tmp, self.path)
