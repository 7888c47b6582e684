package qemu

import (
	"slices"
	"testing"
)

func TestGRUBBoots(t *testing.T) {
	console := "BdsDxe: loading Boot0001\r\n" +
		"debvisor: booting slot A ((hd0),gpt2) fallback=0\r\n[    0.000000] Linux version 6.1\n" +
		"\x1b[0mdebvisor: booting slot B (hd0,gpt3) fallback=1\n" +
		"debvisor: booting slot A ((hd0),gpt2) fallb" // cut off: not counted
	want := []GRUBBoot{{"A", "(hd0),gpt2", false}, {"B", "hd0,gpt3", true}}
	if got := GRUBBoots(console); !slices.Equal(got, want) {
		t.Fatalf("GRUBBoots = %+v, want %+v", got, want)
	}
	if GRUBBoots("") != nil {
		t.Fatal("boots found on an empty console")
	}
}

func TestDvctlStatusArgs(t *testing.T) {
	d := Dvctl{Path: "dvctl", Creds: Credentials{CA: "ca.crt", Cert: "admin.crt", Key: "admin.key"}}
	want := []string{"status", "--node", "127.0.0.1:7443", "--ca", "ca.crt", "--cert", "admin.crt", "--key", "admin.key"}
	if got := d.StatusArgs("127.0.0.1:7443"); !slices.Equal(got, want) {
		t.Fatalf("StatusArgs = %v", got)
	}
}
