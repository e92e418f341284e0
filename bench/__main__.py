"""``python -m bench``: see bench/__init__.py and ``python -m bench --help``."""
import sys

from .runner import main

try:
    sys.exit(main())
except KeyboardInterrupt:
    print("interrupted: every server and client process was killed", file=sys.stderr)
    sys.exit(130)
