"""``python -m natsrv``: the same as the ``natsrv`` command."""

import sys

from .cli import main

sys.exit(main())
