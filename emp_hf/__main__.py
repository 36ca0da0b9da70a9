"""`python -m emp_hf ...`: the `emp-hf` command line (export, push, inspect)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
