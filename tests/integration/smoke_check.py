"""A real smoke test, as a user's test image would run it: GET $TARGET_URL/metrics from the version's own
Service (here the simulated model server, which the test kubelet maps that Service to) and check that the
version it serves ($MODEL_VERSION) reports a prediction drift (PSI) within the bound given.

Usage: python smoke_check.py MAX_PSI [SECONDS_TO_HOLD]   (exit 0 pass, 3 drift too high, 2 no data)
"""

from __future__ import annotations

import os
import re
import sys
import time
import urllib.request


def main() -> int:
    max_psi = float(sys.argv[1])
    time.sleep(float(sys.argv[2]) if len(sys.argv) > 2 else 0.0)  # a slower test, to be interrupted
    url = os.environ["TARGET_URL"] + "/metrics"
    version = os.environ["MODEL_VERSION"]
    with urllib.request.urlopen(url, timeout=5) as response:
        body = response.read().decode()
    pattern = r'^model_prediction_psi\{[^}]*version="' + re.escape(version) + r'"[^}]*\} (\S+)$'
    found = re.search(pattern, body, re.MULTILINE)
    if found is None:
        print(f"{url}: no model_prediction_psi for {version}")
        return 2
    psi = float(found.group(1))
    print(f"{url}: {version} prediction psi {psi:g} (max {max_psi:g})")
    return 0 if psi <= max_psi else 3


if __name__ == "__main__":
    sys.exit(main())
