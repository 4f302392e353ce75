"""The one exception type of the data package."""

from __future__ import annotations


class DataError(ValueError):
    """Malformed or missing input data; the message is one line naming file, line/image and problem."""
