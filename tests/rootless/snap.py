"""Print a JSON snapshot of a tree (run as another user by the rootless tests)."""

import json
import sys

from tests.support import snapshot

print(json.dumps({k: list(v) for k, v in snapshot(sys.argv[1]).items()}, default=list))
