#!/bin/sh
# Health check used by the watchdog and by the upgrade commit: exits 0 only
# when the booted system has the shape DebVisor expects. Prints one line per
# failed check.
fail=0
check() {
	desc=$1
	shift
	if ! "$@" >/dev/null 2>&1; then
		echo "validate-components: FAIL: $desc"
		fail=1
	fi
}
check "root is a read-only squashfs" sh -c '[ "$(findmnt -n -o FSTYPE /)" = squashfs ] && findmnt -n -o OPTIONS / | grep -qw ro'
check "data partition mounted on /data" sh -c '[ "$(findmnt -n -o FSTYPE /data)" = ext4 ]'
for d in /etc /var; do
	check "$d is an overlay on the data partition" sh -c "[ \"\$(findmnt -n -o FSTYPE $d)\" = overlay ]"
done
check "booted from a DebVisor slot" grep -q 'debvisor.slot=' /proc/cmdline
if [ -e /etc/debvisor/pki/node.crt ]; then
	check "debvisor-rpcd is active" systemctl is-active --quiet debvisor-rpcd.service
fi
check "no failed units" sh -c '[ -z "$(systemctl list-units --state=failed --no-legend --plain)" ]'
exit $fail
