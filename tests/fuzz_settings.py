"""Bounded hypothesis settings for the fuzz suite (tests/test_fuzz_*.py).

Every harness runs a fixed number of examples with no deadline, derandomized
so a CI run is reproducible; the whole fuzz suite stays well under two minutes.
Set ORCA_FUZZ_EXAMPLES to run longer by hand.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, settings


def bounded(examples: int):
    scale = int(os.environ.get("ORCA_FUZZ_EXAMPLES", "0"))
    return settings(max_examples=scale or examples, deadline=None, derandomize=not scale,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture],
                    database=None)
