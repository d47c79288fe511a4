"""Diagnostics built on windows (THEORY §8): privacy (memorisation commits early)."""
