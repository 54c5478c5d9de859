"""Make `ansible_collections.llmops.onprem` importable from this checkout.

tests/tools/setup.sh links the checkout as .cache/collections/ansible_collections/llmops/onprem.
"""
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
COLLECTIONS = os.path.join(ROOT, ".cache", "collections")
if not os.path.isdir(os.path.join(COLLECTIONS, "ansible_collections", "llmops", "onprem")):
    raise RuntimeError("run 'make setup' first: %s is missing the collection link" % COLLECTIONS)
sys.path.insert(0, COLLECTIONS)
