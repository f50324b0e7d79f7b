"""Prints what the Baseten emulator holds, values masked. Usage: show-baseten.py URL [MIN_WRITES NAME]"""
import json
import sys
import time
import urllib.request

url = sys.argv[1].rstrip("/")
want_writes = int(sys.argv[2]) if len(sys.argv) > 2 else 0
want_name = sys.argv[3] if len(sys.argv) > 3 else None


def secrets():
    with urllib.request.urlopen(f"{url}/_admin/secrets", timeout=5) as response:
        return json.load(response)


deadline = time.time() + 30
rows = secrets()
while want_name and time.time() < deadline:
    if any(s["name"] == want_name and s["writes"] >= want_writes for s in rows):
        break
    time.sleep(0.2)
    rows = secrets()

print(f"{'NAME':<20} {'ID':<9} {'TEAM':<14} {'CREATED_AT':<22} {'WRITES':>6}  VALUE")
for s in rows:
    value = s["value"]
    masked = f"******** ({len(value)} characters)"
    print(f"{s['name']:<20} {s['id']:<9} {s['team_name']:<14} {s['created_at']:<22} {s['writes']:>6}  {masked}")
if want_name and not any(s["name"] == want_name and s["writes"] >= want_writes for s in rows):
    sys.exit(f"timed out waiting for {want_name} to reach {want_writes} writes")
