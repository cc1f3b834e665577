"""Configuration: files, validation, immutable snapshots and reload.

Layout (issue 14: reading files apart from the pure rules):

- ``model``: the snapshot's frozen values; ``problems``: ``ConfigProblem`` and ``ConfigError``.
- ``tables``: typed reading of TOML tables into a problem sink, shared value checks.
- ``server_rules``: pbx.toml, section by section; ``tenant_rules``: one tenant file.
- ``build``: the pure builder, bytes in, ``ConfigSnapshot`` or ``ConfigError`` out.
- ``load``: ``load_config`` reads the files (with optional in-memory overrides) and builds.
- ``holder``: the current snapshot and reload; ``check``: ``pbx check-config``.
"""
