"""The web control panel (設定変更): what tenant admins and operators use instead of editing TOML.

Layout (pure modules first, adapters last; the web layer parses, calls one domain function,
renders):

- ``passwords``: argon2 hashing of panel passwords, generated SIP passwords (pure).
- ``signin``: the sign-in throttle, slowing then locking by address and by account (pure, ``now``
  passed in).
- ``forms``: what an admin types, normalised (full-width digits, 、, spaces, hyphens) or refused
  with a hint (pure).
- ``tenant_files``: edits of a tenant's TOML that keep the admin's comments and key order
  (tomlkit), and the atomic, versioned writer with a stale-save check.
- ``accounts``: operators, tenant admins, sessions, the audit log and the operator's number pool,
  in the server's database (through ``pbx.store.Store``).
- ``i18n``: the panel's words in Japanese (the manual's) and English.
- ``saving``: one save: validate with the config loader, write, reload the running server.
- ``app``: the Starlette application (routes, templates, CSRF, the tenant check in one place).
"""
