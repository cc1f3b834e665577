"""Calls: the sans-IO call core and what it needs, below the asyncio engine (``pbx.b2bua``).

Pure: ``admission`` (who may place a call), ``core`` (one ``CallCore`` per call: events in,
actions out, one timer), ``record`` (the call record). Nothing here awaits, reads a clock,
opens a socket or touches the database; ``pbx.b2bua`` carries the actions out.
"""
