"""`python -m ddakern COMMAND ...`: the library's command line (see ddakern.cli)."""

import sys

from ddakern.cli import main

if __name__ == "__main__":
    sys.exit(main())
