"""Comparison with the authors: their published logs and the paper's rows (``authors``), and
summaries, tables and plots of runs beside them (``summary``, ``python -m common.compare``).
"""
