package dvctl

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	root := NewRoot(&out, &errb)
	root.SetArgs(args)
	err := root.Execute()
	return out.String() + errb.String(), err
}

func TestContexts(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "dvctl.yaml")
	if out, err := run(t, "--config", cfg, "config", "set-context", "a", "--endpoint", "127.0.0.1:1", "--cert-file", "x.crt"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := run(t, "--config", cfg, "config", "set-context", "b", "--endpoint", "unix:///run/x.sock"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	fi, err := os.Stat(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("config mode %v, want 0600", fi.Mode().Perm())
	}
	out, err := run(t, "--config", cfg, "config", "get-contexts")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out, "*        a") || !strings.Contains(out, "unix:///run/x.sock") {
		t.Errorf("get-contexts:\n%s", out)
	}
	if _, err := run(t, "--config", cfg, "config", "use-context", "nope"); err == nil || !strings.Contains(err.Error(), `"nope" not found`) {
		t.Errorf("use-context of a missing context: %v", err)
	}
	if _, err := run(t, "--config", cfg, "config", "use-context", "b"); err != nil {
		t.Fatal(err)
	}
	f, err := LoadFile(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if f.CurrentContext != "b" {
		t.Errorf("current = %q", f.CurrentContext)
	}
	if c, _ := f.Get("a"); !filepath.IsAbs(c.Cert) {
		t.Errorf("cert path not made absolute: %q", c.Cert)
	}
	// Flags override the context.
	g := &globals{configPath: cfg, node: "10.0.0.1:7443"}
	cc, err := g.clientConfig()
	if err != nil || cc.Endpoint != "10.0.0.1:7443" {
		t.Errorf("--node did not override: %+v %v", cc, err)
	}
}

func TestParseFileErrors(t *testing.T) {
	tests := []struct{ in, want string }{
		{"contexts:\n  - name: a\n    endpoit: x\n", "unknown field \"endpoit\""},
		{"contexts:\n  - endpoint: x\n", "contexts[0].name: must not be empty"},
		{"contexts:\n  - name: a\n  - name: a\n", "contexts[1].name: \"a\" is defined twice"},
	}
	for _, tt := range tests {
		if _, err := ParseFile([]byte(tt.in)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("ParseFile(%q) = %v, want %q", tt.in, err, tt.want)
		}
	}
}

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"status", "-o", "xml"}, `-o "xml": want table, json or yaml`},
		{[]string{"--node", "127.0.0.1:1", "status"}, "no CA given"},
		{[]string{"pki", "issue", "client", "x", "--role", "root", "--dir", "/nonexistent"}, "--role: unknown role"},
		{[]string{"op", "list", "--state", "sleeping", "--node", "unix:///nonexistent"}, "--state \"sleeping\""},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := run(t, append([]string{"--config", filepath.Join(t.TempDir(), "c.yaml")}, tt.args...)...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestCompletion(t *testing.T) {
	for _, sh := range []string{"bash", "zsh", "fish"} {
		out, err := run(t, "completion", sh)
		if err != nil || !strings.Contains(out, "dvctl") {
			t.Errorf("completion %s: %v (%d bytes)", sh, err, len(out))
		}
	}
}

func FuzzParseFile(f *testing.F) {
	f.Add([]byte("current_context: a\ncontexts:\n  - name: a\n    endpoint: 127.0.0.1:7443\n"))
	f.Add([]byte("contexts: [{name: a}, {name: a}]"))
	f.Fuzz(func(t *testing.T, data []byte) {
		cfg, err := ParseFile(data)
		if err != nil {
			return
		}
		seen := map[string]bool{}
		for _, c := range cfg.Contexts {
			if c.Name == "" || seen[c.Name] {
				t.Fatalf("accepted invalid contexts: %+v", cfg.Contexts)
			}
			seen[c.Name] = true
		}
	})
}

func TestNodeFlag(t *testing.T) {
	cfg := filepath.Join(t.TempDir(), "dvctl.yaml")
	tests := []struct {
		endpoint, node     string
		wantEndpoint, want string
		wantErr            string
	}{
		{endpoint: "10.0.0.1:7443", node: "n3", wantEndpoint: "10.0.0.1:7443", want: "n3"},
		{endpoint: "10.0.0.1:7443", node: "10.0.0.2:7443", wantEndpoint: "10.0.0.2:7443"},
		{node: "unix:///run/x.sock", wantEndpoint: "unix:///run/x.sock"},
		{node: "n3", wantEndpoint: LocalSocket, want: "n3"},
		{endpoint: "10.0.0.1:7443", node: "n_3", wantErr: "neither a member name nor an endpoint"},
	}
	for _, tt := range tests {
		t.Run(tt.endpoint+"/"+tt.node, func(t *testing.T) {
			g := &globals{configPath: cfg, endpoint: tt.endpoint, node: tt.node}
			cc, err := g.clientConfig()
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("clientConfig = %+v, %v; want %q", cc, err, tt.wantErr)
				}
				return
			}
			if err != nil || cc.Endpoint != tt.wantEndpoint || cc.Node != tt.want {
				t.Fatalf("clientConfig = %+v, %v; want endpoint %q node %q", cc, err, tt.wantEndpoint, tt.want)
			}
		})
	}
	for _, args := range [][]string{
		{"cluster", "token", "create", "--ttl", "-1h"},
		{"cluster", "token", "create", "--ttl", "9999h"},
		{"cluster", "token", "delete", "NOPE"},
	} {
		if _, err := run(t, append([]string{"--config", cfg, "--endpoint", "unix:///nonexistent"}, args...)...); err == nil {
			t.Errorf("%v accepted", args)
		}
	}
}
