"""Configuration: files, validation, immutable snapshots and reload."""
