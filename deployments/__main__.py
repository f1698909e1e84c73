"""``python -m deployments …`` is ``acr-transfer …``."""

import sys

from deployments.cli import main

sys.exit(main())
