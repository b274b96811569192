"""`python -m infra.stack`, the documented command for the local stack (infra/local/stack.py)."""
import sys

from infra.local.stack import main

if __name__ == "__main__":
    sys.exit(main())
