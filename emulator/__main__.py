"""``python -m emulator up …``"""

import sys

from emulator.main import main

sys.exit(main())
