"""Tests of the configuration loader, its rules, cycles, purity and reload."""
