"""Container HEALTHCHECK: is the agent's loop alive (GET /livez)?

Liveness rather than readiness: a session lost at IBKR's nightly reset is the
agent's job to recover, not a reason to call the container unhealthy.  Use
/readyz (port 5001) where a caller needs an authenticated gateway.
"""

import os
import sys
import urllib.error
import urllib.request


def main() -> int:
    """Exit 0 when /livez answers 200, 1 otherwise."""
    port = os.environ.get("IBEAM_HEALTH_SERVER_PORT", "5001")
    if port == "0":
        print("health server disabled (IBEAM_HEALTH_SERVER_PORT=0): nothing to check")
        return 0
    url = f"http://127.0.0.1:{port}/livez"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            print(f"{url}: {response.status}")
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"{url}: {exc}")
        return 1


if __name__ == "__main__":
    sys.exit(main())
