"""``python -m storage``: the ``modelstorage`` command."""

import sys

from storage.cli import main

sys.exit(main())
