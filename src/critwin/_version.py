"""The package version, in the bottom layer so every module can record it without importing ``critwin``."""

__version__ = "0.1.0"
