"""``python -m listenable.cli`` (and ``torchrun -m listenable.cli``)."""

import sys

from listenable.cli import main

sys.exit(main())
