#!/usr/bin/env bash
# Fails when a process started by a test run (TESTENV_SESSION=test) is still alive. Watchdogs
# stop them within seconds of the test binary exiting, so wait a little first.
set -u
deadline=$((SECONDS + ${1:-20}))
survivors() {
  for environ in /proc/[0-9]*/environ; do
    pid=${environ#/proc/}; pid=${pid%/environ}
    [ "$pid" = "$$" ] && continue
    # The braces catch the redirection's own error for processes gone or not ours.
    if { tr '\0' '\n' < "$environ"; } 2>/dev/null | grep -qx 'TESTENV_SESSION=test'; then
      echo "$pid $(tr '\0' ' ' < /proc/$pid/cmdline 2>/dev/null | cut -c1-120)"
    fi
  done
}
while [ $SECONDS -lt $deadline ]; do
  [ -z "$(survivors)" ] && { echo "no test processes left behind"; exit 0; }
  sleep 1
done
echo "processes left behind by the tests:" >&2
survivors >&2
exit 1
