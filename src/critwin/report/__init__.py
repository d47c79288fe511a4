"""Reports: the ``critwin demo`` report (HTML + PNG figures + JSON summary)."""
