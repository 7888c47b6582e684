package osimage

import (
	"strings"
	"testing"
	"time"
)

const (
	testToken = "abcdef.0123456789abcdef"
	testHash  = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

func TestParseClusterEnrollment(t *testing.T) {
	tests := []struct {
		name, in, wantErr string
	}{
		{"bootstrap", "bootstrap: true\nname: lab\ntoken: " + testToken + "\ntoken_ttl: 48h\n", ""},
		{"bootstrap alone", "bootstrap: true\n", ""},
		{"bootstrap with CA", "bootstrap: true\nca: ca.crt\nca_key: ca.key\n", ""},
		{"join mdns", "token: " + testToken + "\nca_cert_hash: " + testHash + "\n", ""},
		{"join address", "token: " + testToken + "\nca_cert_hash: " + testHash + "\njoin: [10.0.0.1:7443, \"n1.lab:7443\"]\n", ""},
		{"join without token", "ca_cert_hash: " + testHash + "\n", "token: a joining node needs the join token"},
		{"join without hash", "token: " + testToken + "\n", "ca_cert_hash: must not be empty"},
		{"join with bad hash", "token: " + testToken + "\nca_cert_hash: md5:00\n", "ca_cert_hash:"},
		{"bad token", "bootstrap: true\ntoken: secret\n", "token: not a join token"},
		{"bad address", "token: " + testToken + "\nca_cert_hash: " + testHash + "\njoin: [10.0.0.1]\n", "join[0]"},
		{"bootstrap with hash", "bootstrap: true\nca_cert_hash: " + testHash + "\n", "ca_cert_hash and join are for joining nodes"},
		{"join with ttl", "token: " + testToken + "\nca_cert_hash: " + testHash + "\ntoken_ttl: 1h\n", "only a bootstrapping node"},
		{"bad ttl", "bootstrap: true\ntoken_ttl: forever\n", "token_ttl:"},
		{"ttl too long", "bootstrap: true\ntoken_ttl: 10000h\n", "token_ttl:"},
		{"zero ttl", "bootstrap: true\ntoken_ttl: 0s\n", "token_ttl:"},
		{"half CA", "bootstrap: true\nca: ca.crt\n", "give both or neither"},
		{"CA escape", "bootstrap: true\nca: ../ca.crt\nca_key: k\n", "ca: want a file name relative"},
		{"bad name", "bootstrap: true\nname: my_lab\n", "name:"},
		{"unknown key", "bootstrap: true\ntokn: x\n", "tokn"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, err := ParseClusterEnrollment([]byte(tt.in))
			if tt.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				// What parses round-trips through Marshal.
				out, err := e.Marshal()
				if err != nil {
					t.Fatal(err)
				}
				if _, err := ParseClusterEnrollment(out); err != nil {
					t.Fatalf("re-parse of %q: %v", out, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("err = %v, want mention of %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "0123456789abcdef\"") {
				t.Errorf("error repeats the token secret: %v", err)
			}
		})
	}
}

func TestClusterEnrollmentTTL(t *testing.T) {
	if d := (ClusterEnrollment{}).TTL(); d != 24*time.Hour {
		t.Errorf("default TTL %s", d)
	}
	if d := (ClusterEnrollment{TokenTTL: "90m"}).TTL(); d != 90*time.Minute {
		t.Errorf("TTL %s", d)
	}
}

func TestPreseedCluster(t *testing.T) {
	p, err := ParsePreseed([]byte("version: 1\ncluster:\n  token: " + testToken + "\n  ca_cert_hash: " + testHash + "\n  join: [10.0.0.1:7443]\n"))
	if err != nil {
		t.Fatal(err)
	}
	if p.Cluster == nil || p.Cluster.Token != testToken || len(p.Cluster.Join) != 1 {
		t.Fatalf("cluster section: %+v", p.Cluster)
	}
	if _, err := ParsePreseed([]byte("version: 1\ncluster:\n  token: " + testToken + "\n")); err == nil || !strings.Contains(err.Error(), "cluster: ") {
		t.Fatalf("preseed with a join lacking the CA hash: %v", err)
	}
}

func FuzzParseClusterEnrollment(f *testing.F) {
	f.Add([]byte("bootstrap: true\ntoken: " + testToken + "\n"))
	f.Add([]byte("token: " + testToken + "\nca_cert_hash: " + testHash + "\njoin: [a:1]\n"))
	f.Add([]byte("join: [\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := ParseClusterEnrollment(data)
		if err != nil {
			return
		}
		if err := e.Validate(); err != nil {
			t.Fatalf("parsed but does not validate: %v", err)
		}
		if !e.Bootstrap && (e.Token == "" || e.CACertHash == "") {
			t.Fatalf("a join without token or CA hash parsed: %+v", e)
		}
	})
}

func TestSeedFiles(t *testing.T) {
	p, err := ParsePreseed([]byte("version: 1\npki: {ca: p/ca.crt, cert: p/n.crt, key: p/n.key}\ncluster:\n  bootstrap: true\n  ca: c/ca.crt\n  ca_key: c/ca.key\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.SeedFiles(), ","); got != "p/ca.crt,p/n.crt,p/n.key,c/ca.crt,c/ca.key" {
		t.Errorf("SeedFiles = %s", got)
	}
	if got := (&Preseed{}).SeedFiles(); len(got) != 0 {
		t.Errorf("empty preseed names %v", got)
	}
}
