package firstboot

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/debvisor/debvisor/osimage"
)

func writeAll(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRunOnce runs firstboot against a directory tree (the device steps
// are skipped off-node) with a preseed, then again: the second run must
// change nothing.
func TestRunOnce(t *testing.T) {
	root := t.TempDir()
	writeAll(t, root, map[string]string{
		"seed/preseed.yaml": `version: 1
hostname: node7
ssh_authorized_keys: ["ssh-ed25519 AAAAtest user@test"]
pki: {ca: pki/ca.crt, cert: pki/node.crt, key: pki/node.key}
agent_config: "log_level: debug\n"
files:
  - path: /etc/systemd/network/10-x.network
    mode: "0640"
    content: "[Match]\nName=en*\n"
`,
		"seed/pki/ca.crt":           "CA",
		"seed/pki/node.crt":         "CERT",
		"seed/pki/node.key":         "KEY",
		"root/.ssh/authorized_keys": "ssh-ed25519 AAAAold old@test",
	})
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cfg := Config{Root: root, Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Now: func() time.Time { return now }}
	res, err := Run(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	if res.Skipped || !strings.HasSuffix(res.Preseed, "seed/preseed.yaml") {
		t.Fatalf("result %+v", res)
	}
	checks := []struct {
		path, want string
		mode       os.FileMode
	}{
		{"etc/hostname", "node7\n", 0o644},
		{osimage.PKICA, "CA", 0o644},
		{osimage.PKICert, "CERT", 0o644},
		{osimage.PKIKey, "KEY", 0o600},
		{osimage.AgentConfigPath, "log_level: debug\n", 0o600},
		{"etc/systemd/network/10-x.network", "[Match]\nName=en*\n", 0o640},
		{"root/.ssh/authorized_keys", "ssh-ed25519 AAAAold old@test\nssh-ed25519 AAAAtest user@test\n", 0o600},
		{osimage.FirstbootStamp, "2026-01-02T03:04:05Z\n", 0o644},
	}
	for _, c := range checks {
		p := filepath.Join(root, c.path)
		b, err := os.ReadFile(p)
		if err != nil {
			t.Errorf("%s: %v", c.path, err)
			continue
		}
		if string(b) != c.want {
			t.Errorf("%s = %q, want %q", c.path, b, c.want)
		}
		if st, _ := os.Stat(p); st.Mode().Perm() != c.mode {
			t.Errorf("%s mode %v, want %v", c.path, st.Mode().Perm(), c.mode)
		}
	}
	hostname := filepath.Join(root, "etc/hostname")
	if err := os.WriteFile(hostname, []byte("changed-by-operator\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	res, err = Run(context.Background(), cfg)
	if err != nil || !res.Skipped {
		t.Fatalf("second run: %+v, %v", res, err)
	}
	if b, _ := os.ReadFile(hostname); string(b) != "changed-by-operator\n" {
		t.Fatalf("second run rewrote the hostname: %q", b)
	}
}

func TestRunBadPreseedFails(t *testing.T) {
	root := t.TempDir()
	writeAll(t, root, map[string]string{"seed/preseed.yaml": "version: 1\nhostnam: x\n"})
	_, err := Run(context.Background(), Config{Root: root, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "hostnam") {
		t.Fatalf("err = %v, want the unknown field named", err)
	}
	if _, err := os.Stat(filepath.Join(root, osimage.FirstbootStamp)); err == nil {
		t.Fatal("stamp written although the preseed failed: firstboot would never retry")
	}
}

func TestNoPreseed(t *testing.T) {
	root := t.TempDir()
	res, err := Run(context.Background(), Config{Root: root, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil || res.Preseed != "" {
		t.Fatalf("%+v %v", res, err)
	}
}

// TestPreseedCluster: the preseed's cluster section becomes the enroll file
// the agent reads (0600, the token inside), and a CA made beforehand is
// installed for a bootstrapping node; a join section is written as given.
func TestPreseedCluster(t *testing.T) {
	const tok = "abcdef.0123456789abcdef"
	hash := "sha256:" + strings.Repeat("ab", 32)
	t.Run("bootstrap with CA", func(t *testing.T) {
		root := t.TempDir()
		seed := filepath.Join(root, "seed")
		writeAll(t, root, map[string]string{"seed/ca.crt": "CA", "seed/ca.key": "CAKEY"})
		p, err := osimage.ParsePreseed([]byte("version: 1\ncluster:\n  bootstrap: true\n  name: lab\n  token: " + tok + "\n  ca: ca.crt\n  ca_key: ca.key\n"))
		if err != nil {
			t.Fatal(err)
		}
		if err := Apply(root, seed, p); err != nil {
			t.Fatal(err)
		}
		for path, want := range map[string]struct {
			content string
			mode    os.FileMode
		}{osimage.PKICA: {"CA", 0o644}, osimage.PKICAKey: {"CAKEY", 0o600}} {
			b, err := os.ReadFile(filepath.Join(root, path))
			if err != nil || string(b) != want.content {
				t.Errorf("%s = %q, %v", path, b, err)
			}
			if st, _ := os.Stat(filepath.Join(root, path)); st == nil || st.Mode().Perm() != want.mode {
				t.Errorf("%s mode %v", path, st.Mode().Perm())
			}
		}
		e := readEnroll(t, root)
		if !e.Bootstrap || e.Token != tok || e.Name != "lab" || e.CA != "" || e.CAKey != "" {
			t.Errorf("enroll file %+v", e)
		}
	})
	t.Run("join", func(t *testing.T) {
		root := t.TempDir()
		p, err := osimage.ParsePreseed([]byte("version: 1\ncluster:\n  token: " + tok + "\n  ca_cert_hash: " + hash + "\n  join: [10.0.0.1:7443]\n"))
		if err != nil {
			t.Fatal(err)
		}
		if err := Apply(root, root, p); err != nil {
			t.Fatal(err)
		}
		e := readEnroll(t, root)
		if e.Bootstrap || e.Token != tok || e.CACertHash != hash || len(e.Join) != 1 {
			t.Errorf("enroll file %+v", e)
		}
		if _, err := os.Stat(filepath.Join(root, osimage.PKICAKey)); err == nil {
			t.Error("a joining node got a CA key")
		}
	})
	t.Run("missing CA file changes nothing", func(t *testing.T) {
		root := t.TempDir()
		p, err := osimage.ParsePreseed([]byte("version: 1\ncluster:\n  bootstrap: true\n  ca: ca.crt\n  ca_key: ca.key\n"))
		if err != nil {
			t.Fatal(err)
		}
		if err := Apply(root, root, p); err == nil || !strings.Contains(err.Error(), "cluster:") {
			t.Fatalf("Apply = %v, want a cluster error", err)
		}
		if _, err := os.Stat(filepath.Join(root, osimage.ClusterEnrollPath)); err == nil {
			t.Error("enroll file written although the CA was missing")
		}
	})
}

func readEnroll(t *testing.T, root string) *osimage.ClusterEnrollment {
	t.Helper()
	p := filepath.Join(root, osimage.ClusterEnrollPath)
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("enroll file mode %v, want 0600 (it holds the token)", st.Mode().Perm())
	}
	b, _ := os.ReadFile(p)
	e, err := osimage.ParseClusterEnrollment(b)
	if err != nil {
		t.Fatal(err)
	}
	return e
}
