"""Where tools/make-fixtures (run as root) leaves what the tests read: the base
layouts, the oracles, gomtree. $ORCA_FIXTURES (tools/test passes it on), else
/var/cache/orca-fixtures."""

from __future__ import annotations

import os
from pathlib import Path

FIXTURES = Path(os.environ.get("ORCA_FIXTURES", "/var/cache/orca-fixtures"))
