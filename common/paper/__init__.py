"""The paper: its math as TF1 graph ops (the hyperspherical energies in ``energy``, the three
projections of CoMHE in ``projections``, CNN-9 with its energy hooks in ``model``), and,
framework-free, the protocol's numbers and schedule (``protocol``, ``schedule``) and what
each variant adds to the loss (``terms``). Imports no engine, no run code, no data code.
"""
