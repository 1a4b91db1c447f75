#!/bin/sh
# Entry point of the fleet image: starts the demo services that are installed
# (as an init system would at boot; containers have none), then execs "$@".
for ctl in /usr/lib/convoy-demo/*/ctl; do
  [ -x "$ctl" ] && "$ctl" start >/dev/null 2>&1 || true
done
exec "$@"
