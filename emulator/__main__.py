"""``python -m emulator up …`` (also what ``acr-transfer emulator …`` execs).

The stand-in's own dependencies are the package's ``emulator`` extra, which a worker image does not
install: without them this prints how to get them and exits 2 instead of a traceback.
"""

import importlib
import sys

# top-level modules of the `emulator` extra in pyproject.toml
EXTRA_MODULES = frozenset({"trustme"})

try:
    for module in sorted(EXTRA_MODULES):  # before the rest, so a missing one is told at once
        importlib.import_module(module)
    from emulator.main import main
except ImportError as exc:
    if exc.name not in EXTRA_MODULES:
        raise
    print(
        f"acr-transfer: the local Azure stand-in needs the 'emulator' extra ({exc.name} is not installed): "
        "pip install 'acr-transfer[emulator]'  or  uv sync --extra emulator",
        file=sys.stderr,
    )
    sys.exit(2)

sys.exit(main())
