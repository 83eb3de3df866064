"""Make ``ansible_collections.llmops.vastai`` importable (``make setup`` links the repo there)."""
import os
import sys

_COLL = os.path.join(os.path.dirname(__file__), "..", "..", "..", ".collections")
_COLL = os.path.abspath(_COLL)
if _COLL not in sys.path:
    sys.path.insert(0, _COLL)
