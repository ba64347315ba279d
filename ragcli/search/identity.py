"""Who is asking: the user and groups a request runs as, by the ``identity`` setting.

- ``caller`` (the default): the caller asserts ``--user`` and ``--groups`` and ragcli trusts it.
  Right for a single user's own documents, or behind a service that authenticates its users and
  passes their groups on.
- ``os``: the user is the operating-system account running ragcli; its groups are that account's
  OS groups, plus those ``users_file`` (a ``users.toml``: ``alice = ["hr", "finance"]``) lists for
  it. ``--user`` may only name that account and ``--groups`` may only narrow the groups; anything
  else is a usage error (exit 2). Right for a shared machine where each person runs ragcli under
  their own account.

A deployment locks the mode by setting ``identity`` (and ``users_file``) in
``/etc/ragcli/ragcli.toml`` (settings.SYSTEM_CONFIG), which overrides every flag, variable and
project file. What ``os`` mode cannot stop: someone who can read the store's files directly, or run
their own code as another account; the store's file permissions must match.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, UsageError
from ..models import GROUP_NAME


@dataclass(frozen=True)
class Identity:
    user: str
    groups: tuple[str, ...]


def os_account() -> tuple[str, tuple[str, ...]]:
    """The login name of this process's real user and the names of its groups."""
    import grp
    import pwd

    user = pwd.getpwuid(os.getuid()).pw_name
    names = set()
    for gid in {os.getgid(), *os.getgroups()}:
        try:
            names.add(grp.getgrgid(gid).gr_name)
        except KeyError:  # a gid without a name: nothing a document's ACL could name either
            continue
    return user, tuple(sorted(n for n in names if GROUP_NAME.match(n)))


def read_users_file(path: Path) -> dict[str, tuple[str, ...]]:
    """``users.toml``: ``user = ["group", ...]`` (or under a ``[users]`` table)."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"users_file not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"users_file {path} is not a readable TOML file: {exc}") from None
    table = data.get("users", data)
    users: dict[str, tuple[str, ...]] = {}
    for user, groups in table.items():
        if not isinstance(groups, list) or not all(isinstance(g, str) and GROUP_NAME.match(g)
                                                   for g in groups):
            raise ConfigError(f"{path}: {user} must be a list of group names")
        users[str(user)] = tuple(sorted(set(groups)))
    return users


def resolve_identity(mode: str, users_file: Path | None, user: str | None,
                     groups: Sequence[str]) -> Identity:
    """The identity a request runs as, from the flags given (``user`` None: not given)."""
    groups = [g for g in groups if g]
    if mode == "caller":
        return Identity(user or os.environ.get("USER") or "unknown", tuple(groups))
    account, allowed = os_account()
    if users_file is not None:
        allowed = tuple(sorted({*allowed, *read_users_file(users_file).get(account, ())}))
    if user is not None and user != account:
        raise UsageError(f"identity = os: --user cannot be {user!r}; this process runs as "
                         f"{account!r}")
    outside = [g for g in groups if g not in allowed]
    if outside:
        raise UsageError(f"identity = os: {', '.join(outside)} is not among the groups of "
                         f"{account!r} ({', '.join(allowed) or 'none'}); --groups may only narrow them")
    return Identity(account, tuple(groups) if groups else allowed)
