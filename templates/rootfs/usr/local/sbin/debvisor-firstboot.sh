#!/bin/sh
# debvisor-firstboot.service entry point. The work is in Go
# (nodeagent/firstboot); this wrapper keeps the unit stable if the binary moves.
set -eu
exec /usr/local/bin/debvisor-agent firstboot "$@"
