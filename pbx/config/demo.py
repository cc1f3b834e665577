"""The demo configuration's published passwords (config/tenants/acme.toml), and the rule that a
server reachable from other hosts does not run with them (issue 19).

Pure: reads a snapshot, returns words. ``pbx run`` refuses to start when a user's password is one
of the repository's demo passwords (in clear or as its HA1 hash) while a ``[sip] listen`` address
is not a loopback address, unless ``--allow-demo-passwords`` is given.
"""

from __future__ import annotations

import hashlib
import ipaddress

from pbx.config.model import ConfigSnapshot, UserConfig

# The passwords written in config/tenants/acme.toml (tests/deploy keeps this list in step).
DEMO_PASSWORDS = frozenset(f"acme-{ext}-secret" for ext in ("1001", "1002", "1003", "1004"))


def _is_demo(user: UserConfig, realm: str) -> bool:
    if user.password is not None:
        return user.password in DEMO_PASSWORDS
    for password in DEMO_PASSWORDS:
        a1 = f"{user.extension}:{realm}:{password}".encode()
        if user.password_ha1_md5 == hashlib.md5(a1).hexdigest():
            return True
        if user.password_ha1_sha256 == hashlib.sha256(a1).hexdigest():
            return True
    return False


def demo_password_users(snapshot: ConfigSnapshot) -> list[str]:
    """``tenant/extension`` of every user whose password is a published demo password."""
    return [
        f"{tenant.id}/{user.extension}"
        for tenant in snapshot.tenants.values()
        for user in tenant.users.values()
        if _is_demo(user, tenant.domain)
    ]


def public_sip_addresses(snapshot: ConfigSnapshot) -> list[str]:
    """The ``[sip] listen`` entries other hosts can reach (not loopback)."""
    return [
        f"{spec.transport}:{spec.host}:{spec.port}"
        for spec in snapshot.server.sip.listen
        if not ipaddress.ip_address(spec.host).is_loopback
    ]


def demo_password_refusal(snapshot: ConfigSnapshot) -> str | None:
    """Why ``pbx run`` refuses to start, or None when it may."""
    users = demo_password_users(snapshot)
    public = public_sip_addresses(snapshot)
    if not users or not public:
        return None
    return (
        f"refusing to start: {', '.join(users)} still use the demo passwords published in the "
        f"repository, and [sip] listen {', '.join(public)} is reachable from other hosts. "
        "Give these users passwords of their own (the panel's 端末設定 issues one; or edit "
        "`password` in the tenant file), or listen on 127.0.0.1 only; "
        "`pbx run --allow-demo-passwords` starts anyway (a lab without outside access)."
    )
