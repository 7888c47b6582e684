package osimage

import (
	"bytes"
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

func TestBootEnvRoundTrip(t *testing.T) {
	e := NewBootEnv()
	e.Set("custom", "kept")
	b, err := e.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if len(b) != EnvBlockSize || !bytes.HasPrefix(b, []byte("# GRUB Environment Block\n")) {
		t.Fatalf("bad block: %q", b[:64])
	}
	want := "# GRUB Environment Block\nA_OK=1\nA_TRY=0\nB_OK=0\nB_TRY=0\nORDER=A B\ncustom=kept\n#"
	if !bytes.HasPrefix(b, []byte(want)) {
		t.Fatalf("block = %q, want prefix %q", b[:len(want)], want)
	}
	e2, err := ParseBootEnv(b)
	if err != nil {
		t.Fatal(err)
	}
	if e2.Get("custom") != "kept" || e2.Get(EnvOrder) != "A B" {
		t.Fatalf("round trip lost variables: %v", e2.vars)
	}
}

func TestNextBoot(t *testing.T) {
	tests := []struct {
		name         string
		order        []Slot
		aOK, aTry    bool
		bOK, bTry    bool
		want         Slot
		wantFallback bool
	}{
		{"fresh image", []Slot{SlotA, SlotB}, true, false, false, false, SlotA, false},
		{"B upgraded and preferred", []Slot{SlotB, SlotA}, true, false, true, false, SlotB, false},
		{"B tried without commit falls back to A", []Slot{SlotB, SlotA}, true, false, true, true, SlotA, false},
		{"all tried boots first OK", []Slot{SlotA, SlotB}, true, true, false, false, SlotA, true},
		{"nothing bootable", []Slot{SlotA, SlotB}, false, false, false, false, SlotA, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := NewBootEnv()
			e.SetOrder(tt.order)
			e.SetSlot(SlotA, tt.aOK, tt.aTry)
			e.SetSlot(SlotB, tt.bOK, tt.bTry)
			got, fb := e.NextBoot()
			if got != tt.want || fb != tt.wantFallback {
				t.Fatalf("NextBoot = %s,%v want %s,%v", got, fb, tt.want, tt.wantFallback)
			}
		})
	}
}

func TestReadBootEnvCopies(t *testing.T) {
	good, _ := NewBootEnv().Marshal()
	other := NewBootEnv()
	other.SetSlot(SlotA, true, true)
	tried, _ := other.Marshal()
	damaged := bytes.Repeat([]byte{0}, EnvBlockSize)
	tests := []struct {
		name                 string
		primary, backup      []byte
		wantPrimary, wantBak bool
		wantErr              bool
		wantATry             string
	}{
		{"both good", good, good, false, false, false, "0"},
		{"backup stale", tried, good, false, true, false, "1"},
		{"primary damaged", damaged, tried, true, false, false, "1"},
		{"backup truncated", good, good[:100], false, true, false, "0"},
		{"both damaged", damaged, nil, false, false, true, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ReadBootEnvCopies(tt.primary, tt.backup)
			if (err != nil) != tt.wantErr {
				t.Fatalf("err = %v", err)
			}
			if err != nil {
				return
			}
			if c.RepairPrimary != tt.wantPrimary || c.RepairBackup != tt.wantBak || c.Env.Get("A_TRY") != tt.wantATry {
				t.Fatalf("got %+v A_TRY=%s", c, c.Env.Get("A_TRY"))
			}
		})
	}
}

func TestBootEnvTooLarge(t *testing.T) {
	e := NewBootEnv()
	e.Set("big", strings.Repeat("x", EnvBlockSize))
	if _, err := e.Marshal(); err == nil {
		t.Fatal("oversized block accepted")
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
