"""``python -m common.cifar_fixture DIR``: the README's command for the tiny CIFAR-format
stand-in, kept at that name; the code is common.data.cifar_fixture."""
from common.data.cifar_fixture import main

if __name__ == '__main__':
    main()
