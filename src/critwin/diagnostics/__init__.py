"""Diagnostics built on windows (docs/theory.md §8).

- :mod:`critwin.diagnostics.privacy`: memorised samples commit early; commitment time as a calibrated
  membership score (ROC-AUC, TPR at a calibrated FPR).
- :mod:`critwin.diagnostics.fairness`: rebalance an attribute by resampling continuations only at its
  window, leaving the features decided earlier untouched.
"""
