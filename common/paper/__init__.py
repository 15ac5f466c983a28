"""The paper's math as TF1 graph ops: the hyperspherical energies (``energy``), the three
projections of CoMHE (``projections``), CNN-9 with its energy hooks (``model``), and the
protocol's numbers and schedule (``protocol``, ``schedule``). Imports no engine and no run code.
"""
