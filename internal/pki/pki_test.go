package pki

import (
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestRoles(t *testing.T) {
	ca, err := NewCA("t", Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range []Role{RoleReader, RoleOperator, RoleAdmin} {
		c, err := ca.IssueClient("u", r, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if got := RoleOf(c.Cert); got != r {
			t.Errorf("RoleOf = %v, want %v", got, r)
		}
		if IsNode(c.Cert) {
			t.Error("client certificate marked as node")
		}
	}
	n, err := ca.IssueNode("n1", []string{"127.0.0.1", "n1.lab"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if RoleOf(n.Cert) != RoleNone || !IsNode(n.Cert) {
		t.Errorf("node cert: role %v node %v", RoleOf(n.Cert), IsNode(n.Cert))
	}
	if len(n.Cert.IPAddresses) != 1 || len(n.Cert.DNSNames) != 2 {
		t.Errorf("SANs: %v %v", n.Cert.IPAddresses, n.Cert.DNSNames)
	}
	if _, err := ca.IssueClient("u", RoleNone, Options{}); err == nil {
		t.Error("issued a certificate without a role")
	}
	if _, err := ParseRole("root"); err == nil {
		t.Error("ParseRole accepted root")
	}
}

func TestVerify(t *testing.T) {
	ca, _ := NewCA("t", Options{})
	other, _ := NewCA("o", Options{})
	good, _ := ca.IssueClient("good", RoleAdmin, Options{})
	foreign, _ := other.IssueClient("foreign", RoleAdmin, Options{})
	old, _ := ca.IssueClient("old", RoleAdmin, Options{Now: func() time.Time { return time.Now().Add(-24 * time.Hour) }, Validity: time.Hour})
	roots := ca.pool()
	now := time.Now()
	tests := []struct {
		name string
		err  string
		is   *Issued
		at   time.Time
	}{
		{"good", "", good, now},
		{"foreign", "not issued by this cluster's CA", foreign, now},
		{"expired", "expired at", old, now},
		{"not yet valid", "not valid before", good, now.Add(-time.Hour)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.is.Cert, nil, roots, tt.at)
			if tt.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("err = %v, want %q", err, tt.err)
			}
		})
	}
}

func TestSaveLoad(t *testing.T) {
	dir := t.TempDir()
	ca, _ := NewCA("t", Options{})
	f := Files{Cert: filepath.Join(dir, "ca.crt"), Key: filepath.Join(dir, "ca.key")}
	if err := Save(f, ca.Cert, ca.Key, false); err != nil {
		t.Fatal(err)
	}
	if err := Save(f, ca.Cert, ca.Key, false); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second Save without force: %v", err)
	}
	back, err := LoadCA(f)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Cert.Equal(ca.Cert) {
		t.Error("loaded CA differs")
	}
	if _, err := back.IssueClient("x", RoleReader, Options{}); err != nil {
		t.Errorf("loaded CA cannot sign: %v", err)
	}
	if _, err := ParseCerts([]byte("garbage")); err == nil {
		t.Error("ParseCerts accepted garbage")
	}
}

func FuzzParseCerts(f *testing.F) {
	ca, _ := NewCA("t", Options{})
	f.Add(EncodeCert(ca.Cert))
	f.Add([]byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		certs, err := ParseCerts(data)
		if err == nil && len(certs) == 0 {
			t.Fatal("no error and no certificates")
		}
		_, _ = ParseKey(data)
	})
}
