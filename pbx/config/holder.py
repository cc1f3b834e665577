"""The current configuration snapshot, swapped in one assignment on reload."""

from __future__ import annotations

from pathlib import Path

from pbx.config.load import load_config
from pbx.config.model import ConfigSnapshot


class ConfigHolder:
    """Holds ``current``; calls read it once at INVITE time and keep that snapshot."""

    def __init__(self, current: ConfigSnapshot) -> None:
        self.current = current

    @classmethod
    def load(cls, path: Path) -> ConfigHolder:
        """A holder with the first snapshot (version 1); raises ``ConfigError`` if invalid."""
        return cls(load_config(path, version=1))

    def reload(self, path: Path | None = None) -> ConfigSnapshot:
        """Load ``path`` (default: the current pbx.toml) as the next version and swap it in.

        Raises ``ConfigError`` when the new files are invalid; the old snapshot then stays.
        Files whose contents are those in force (the same digest) are not a new version: the
        current snapshot is returned as it is (issue 19).
        """
        source = path if path is not None else self.current.server.path
        snapshot = load_config(source, version=self.current.version + 1)
        if snapshot.digest == self.current.digest:
            return self.current
        self.current = snapshot  # the one assignment: validation happened above
        return snapshot
