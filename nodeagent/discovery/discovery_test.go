package discovery

import (
	"context"
	"log/slog"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/grandcat/zeroconf"

	"github.com/debvisor/debvisor/testenv/netns"
)

func testRecord(name string) Record {
	return Record{
		Name: name, NodeID: strings.Repeat("ab", 16), ClusterID: "lab", Version: "v1.2.3",
		APIPort: 7443, GossipPort: 7946,
		CertFingerprint: "sha256:" + strings.Repeat("01", 32),
		CAHash:          "sha256:" + strings.Repeat("02", 32), Signer: true,
	}
}

func TestRecordRoundTrip(t *testing.T) {
	r := testRecord("n1")
	got, err := ParseRecord(r.Name, r.APIPort, r.TXT())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, r) {
		t.Fatalf("round trip:\n got %+v\nwant %+v", got, r)
	}
}

func TestParseRecordRefuses(t *testing.T) {
	r := testRecord("n1")
	with := func(key, val string) []string {
		var out []string
		for _, kv := range r.TXT() {
			if strings.HasPrefix(kv, key+"=") {
				if val == "<drop>" {
					continue
				}
				kv = key + "=" + val
			}
			out = append(out, kv)
		}
		return out
	}
	tests := []struct {
		name     string
		instance string
		port     int
		txt      []string
		want     string
	}{
		{"bad instance", "n 1", 7443, r.TXT(), "instance name"},
		{"no port", "n1", 0, r.TXT(), "API port"},
		{"txtvers", "n1", 7443, with("txtvers", "2"), "txtvers"},
		{"no id", "n1", 7443, with("id", "<drop>"), "id:"},
		{"short id", "n1", 7443, with("id", "abc"), "id:"},
		{"bad cluster", "n1", 7443, with("cluster", "a/b"), "cluster:"},
		{"version with space", "n1", 7443, with("version", "1 2"), "version"},
		{"gossip port", "n1", 7443, with("gossip", "70000"), "gossip port"},
		{"fingerprint", "n1", 7443, with("fp", "sha1:00"), "fp:"},
		{"ca hash", "n1", 7443, with("ca", "<drop>"), "ca:"},
		{"signer", "n1", 7443, with("signer", "yes"), "signer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseRecord(tt.instance, tt.port, tt.txt); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseRecord = %v, want error containing %q", err, tt.want)
			}
		})
	}
	// The first occurrence of a key wins (RFC 6763 §6.4); unknown keys are ignored.
	txt := append([]string{"id=" + strings.Repeat("cd", 16), "future=x", "novalue"}, r.TXT()...)
	got, err := ParseRecord("n1", 7443, txt)
	if err != nil || got.NodeID != strings.Repeat("cd", 16) {
		t.Fatalf("ParseRecord with duplicate id = %+v, %v", got, err)
	}
}

func FuzzParseRecord(f *testing.F) {
	r := testRecord("n1")
	f.Add("n1", 7443, strings.Join(r.TXT(), "\x00"))
	f.Add("x", 1, "txtvers=1\x00id=\x00=")
	f.Fuzz(func(t *testing.T, instance string, port int, txt string) {
		got, err := ParseRecord(instance, port, strings.Split(txt, "\x00"))
		if err != nil {
			return
		}
		// What parses re-encodes to the same record.
		again, err := ParseRecord(got.Name, got.APIPort, got.TXT())
		if err != nil || !reflect.DeepEqual(again, got) {
			t.Fatalf("%+v does not round-trip: %+v, %v", got, again, err)
		}
	})
}

// TestAdvertiseBrowse runs real mDNS between two network namespaces on one
// bridge: a browser finds the advertised record with its address, skips an
// invalid advertisement, and stops seeing the node after its goodbye.
func TestAdvertiseBrowse(t *testing.T) {
	lan := netns.NewLAN(t, "sw")
	a, b := netns.Add(t, "a"), netns.Add(t, "b")
	lan.Plug(t, a, "eth0", "10.77.0.1/24")
	lan.Plug(t, b, "eth0", "10.77.0.2/24")
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))

	rec := testRecord("n1")
	ctx, cancel := context.WithCancel(context.Background())
	advDone := make(chan error, 1)
	go func() {
		advDone <- a.Do(func() error { return Advertise(ctx, rec, []net.IP{net.ParseIP("10.77.0.1")}, log) })
	}()
	// A service of the same type with garbage TXT, as a foreign or broken
	// responder would send.
	var junk *zeroconf.Server
	if err := a.Do(func() error {
		var err error
		junk, err = zeroconf.RegisterProxy("junk", Service, Domain, 1234, "junk", []string{"10.77.0.1"}, []string{"txtvers=1", "id=zz"}, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer junk.Shutdown()

	var peers []Peer
	deadline := time.Now().Add(10 * time.Second)
	for len(peers) == 0 && time.Now().Before(deadline) {
		if err := b.Do(func() error {
			var err error
			peers, err = Browse(context.Background(), time.Second, log, nil)
			return err
		}); err != nil {
			t.Fatal(err)
		}
	}
	if len(peers) != 1 {
		t.Fatalf("browse found %d peers, want exactly n1: %+v", len(peers), peers)
	}
	p := peers[0]
	if !reflect.DeepEqual(p.Record, rec) {
		t.Errorf("record:\n got %+v\nwant %+v", p.Record, rec)
	}
	if got := p.APIAddrs(); len(got) != 1 || got[0] != "10.77.0.1:7443" {
		t.Errorf("API addresses %v", got)
	}
	if got := p.GossipAddrs(); len(got) != 1 || got[0] != "10.77.0.1:7946" {
		t.Errorf("gossip addresses %v", got)
	}

	cancel()
	if err := <-advDone; err != nil {
		t.Fatal(err)
	}
	if err := b.Do(func() error {
		var err error
		peers, err = Browse(context.Background(), time.Second, log, nil)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if len(peers) != 0 {
		t.Fatalf("after the goodbye, browse still finds %+v", peers)
	}
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}
