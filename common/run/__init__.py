"""What every run shares, whichever engine trains: a train.py's flags (``config``), the
device TensorFlow sees (``device``), the loop around an engine's step (``loop``), the run's
files, lock and state (``runstate``, ``locks``) and its logs (``runlog``). Imports no engine.
"""
