"""Experiments: reverse processes, forward-reverse, cloning, window estimation."""
