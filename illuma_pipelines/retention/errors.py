"""Exceptions raised by the retention rules. Messages name the rule, the value and the limit."""

from __future__ import annotations


class RetentionError(ValueError):
    """A retention policy, period, override or clock value that cannot be used as given."""


class InvalidOverride(RetentionError):
    """A per-merchant override that would lengthen a maximum, shorten a minimum, or name no rule."""
