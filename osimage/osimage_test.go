package osimage

import (
	"strings"
	"testing"
)

func TestBootedSlot(t *testing.T) {
	tests := []struct {
		cmdline, want string
	}{
		{"BOOT_IMAGE=/boot/vmlinuz root=PARTUUID=x ro debvisor.slot=A debvisor.fallback=0 console=ttyS0", "A"},
		{"debvisor.slot=b quiet", "B"},
		{"debvisor.slot=A debvisor.slot=B", "B"}, // last wins, as in the kernel
		{"debvisor.slot=C", ""},
		{"root=/dev/sda1 ro", ""},
		{"", ""},
		{"xdebvisor.slot=A", ""},
	}
	for _, tt := range tests {
		if got := BootedSlot(tt.cmdline); got != tt.want {
			t.Errorf("BootedSlot(%q) = %q, want %q", tt.cmdline, got, tt.want)
		}
	}
}

func TestSlotContract(t *testing.T) {
	if SlotA.Partition() != 2 || SlotB.Partition() != 3 || PartESP != 1 || PartData != 4 {
		t.Fatal("partition numbers are GRUB's contract and must not change")
	}
	if SlotA.Other() != SlotB || SlotB.Other() != SlotA || SlotB.Label() != LabelB {
		t.Fatal("slot helpers disagree")
	}
	// The BIOS boot partition came later: it must not take a number the
	// UEFI path (and every node already installed) relies on.
	if PartBIOS != 5 || LabelBIOS != "debvisor-bios" || TypeBIOSBoot != "21686148-6449-6E6F-744E-656564454649" {
		t.Fatalf("BIOS boot partition contract changed: %d %s %s", PartBIOS, LabelBIOS, TypeBIOSBoot)
	}
	if _, err := ParseSlot("c"); err == nil {
		t.Fatal("ParseSlot accepted c")
	}
}

func TestParsePreseed(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"full", "version: 1\nhostname: node1\nssh_authorized_keys: [ssh-ed25519 AAAA x]\npki: {ca: ca.crt, cert: n.crt, key: n.key}\nfiles:\n  - path: /etc/x\n    mode: \"0600\"\n    content: hi\n", ""},
		{"unknown key", "version: 1\nhostnme: x\n", "hostnme"},
		{"bad version", "version: 2\n", "version"},
		{"pki escape", "version: 1\npki: {ca: ../ca.crt, cert: a, key: b}\n", "pki.ca"},
		{"file outside etc", "version: 1\nfiles:\n  - path: /usr/bin/x\n    content: x\n", "files[0].path"},
		{"bad mode", "version: 1\nfiles:\n  - path: /etc/x\n    mode: rw\n", "files[0].mode"},
		{"bad hostname", "version: 1\nhostname: -bad\n", "hostname"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParsePreseed([]byte(tt.in))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want mention of %q", err, tt.wantErr)
			}
		})
	}
}
