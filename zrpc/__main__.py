"""``python -m zrpc``: the zrpc command line."""
import sys

from .cli import main

sys.exit(main())
