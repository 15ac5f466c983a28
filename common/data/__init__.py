"""CIFAR-100: finding, downloading and checking it (``cifar``), the training batches as a
function of seed and iteration (``pipeline``), and a tiny stand-in in the same format
(``cifar_fixture``, ``python -m common.cifar_fixture``).
"""
