#!/bin/sh
# The image's shape, as one check ("validate-components") of the node's
# health report: the agent runs this script with its own checks (units,
# libvirt, pools, API, certificates, free space, failed units) and the one
# result feeds the API, `dvctl health`, the systemd watchdog and the upgrade
# commit. Exits 0 only when the booted system has the shape DebVisor
# expects; prints one line per failed check. Safe to run by hand.
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
check "data partition mounted read-write on /data" sh -c '[ "$(findmnt -n -o FSTYPE /data)" = ext4 ] && findmnt -n -o OPTIONS /data | grep -qw rw'
for d in /etc /var; do
	check "$d is an overlay on the data partition" sh -c "[ \"\$(findmnt -n -o FSTYPE $d)\" = overlay ]"
done
check "booted from a DebVisor slot" grep -q 'debvisor.slot=' /proc/cmdline
check "the ESP is reachable for the boot counters" test -d /boot/efi/grub
check "libvirt's QEMU driver is installed" test -x /usr/sbin/libvirtd
exit $fail
