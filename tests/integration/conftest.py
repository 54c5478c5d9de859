"""Shared set-up for every integration test: make `ansible_collections.llmops.onprem`
importable from this checkout (tests/tools/setup.sh links it under .cache/collections).

Tests outside tests/integration/cluster run against real servers the tests start themselves
on loopback (rclone serve s3, Debian's docker-registry, ...); they run in the `integration`
layer of tests/tools/test.sh. tests/integration/cluster needs the Kubernetes test cluster and
runs in the `cluster` layer (tests/cluster/run-tests.sh).
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, ".cache", "collections")
if not os.path.isdir(os.path.join(COLLECTIONS, "ansible_collections", "llmops", "onprem")):
    raise RuntimeError("run 'make setup' first: %s is missing the collection link" % COLLECTIONS)
if COLLECTIONS not in sys.path:
    sys.path.insert(0, COLLECTIONS)
