"""Tests of the call core on fake time (``CallBench`` joins a caller and callees in memory)."""
