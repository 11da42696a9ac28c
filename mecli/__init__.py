"""me: a local, private terminal assistant that learns from your feedback."""

__version__ = "0.1.0"
