"""The package's version, below every layer so that any of them may report it."""

__version__ = "0.1.0"
