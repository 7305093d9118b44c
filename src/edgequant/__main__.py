"""``python -m edgequant``: the same command as ``edgequant``."""

from edgequant.cli import main

if __name__ == "__main__":
    main()
