"""Probes: the only code that talks to the audited environment, all of it read-only."""

from __future__ import annotations


class ProbeError(Exception):
    """A probe could not get its answer; the message is one line, redacted, and says what was tried."""
