"""``python -m sagaledger``: the same as the ``sagaledger`` command."""

from sagaledger.cli import main

if __name__ == "__main__":
    main()
