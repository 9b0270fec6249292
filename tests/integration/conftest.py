"""Integration tests' ordering: the bundle tools' test reads the bundles the other integration tests
made in this session (it boots nothing itself), so it runs after them."""

import time

SESSION_STARTED = time.time()
LAST = ("test_bundle_tools.py",)


def pytest_collection_modifyitems(items):
    items.sort(key=lambda item: item.path.name in LAST)  # stable: everything else keeps its order
