#!/bin/sh
# Network configuration console on tty1, started by firstboot when no
# network is up. Runs the agent's TUI; builds of the agent without it get a
# plain status screen and a login prompt so the console is never dead.
#
# Say so on the system console too (the serial port on a headless node, and
# the boot tests' witness): systemd stops printing unit status once boot is
# over, and firstboot queues this unit right at the end of it.
echo "debvisor-netcfg: network configuration console started on $(tty)" >/dev/console 2>/dev/null || true
if /usr/local/bin/debvisor-agent netcfg --help >/dev/null 2>&1; then
	exec /usr/local/bin/debvisor-agent netcfg
fi
clear
echo "DebVisor network configuration"
echo "=============================="
echo
echo "No network is up. Interfaces:"
ip -brief link
ip -brief address
echo
echo "Log in as root, describe the network in /etc/systemd/network/*.network"
echo "(see systemd.network(5)) and run: networkctl reload"
echo
exec /sbin/agetty --noclear -o '-p -- \u' - linux
