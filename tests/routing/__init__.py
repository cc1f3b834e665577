"""Tests of the routing core: table-driven decisions, schedules, and properties."""
