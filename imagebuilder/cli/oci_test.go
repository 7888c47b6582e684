package cli_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/debvisor/debvisor/imagebuilder"
	"github.com/debvisor/debvisor/imagebuilder/cli"
	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/artifact/artifacttest"
	"github.com/debvisor/debvisor/osimage/registry/registrytest"
)

// run runs debvisor-image in-process and returns its exit code and output.
func run(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := cli.Main(ctx, args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

func mustRun(t *testing.T, args ...string) (string, string) {
	t.Helper()
	code, out, errOut := run(t, args...)
	if code != 0 {
		t.Fatalf("debvisor-image %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out, errOut
}

func events(t *testing.T, stderr string) []imagebuilder.Event {
	t.Helper()
	var evs []imagebuilder.Event
	sc := bufio.NewScanner(strings.NewReader(stderr))
	for sc.Scan() {
		var ev imagebuilder.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("stderr line is not a JSON event: %q", sc.Text())
		}
		evs = append(evs, ev)
	}
	return evs
}

// TestPushPullCommands: keygen, push --sign-key (JSON events with bytes
// on stderr, the result on stdout), push again (nothing uploaded),
// verify, pull; against Debian's docker-registry.
func TestPushPullCommands(t *testing.T) {
	reg := registrytest.StartDistribution(t, registrytest.DistributionConfig{})
	work := t.TempDir()
	out := filepath.Join(work, "out")
	build := artifacttest.Write(t, out, artifacttest.Spec{Version: "7.1.0"})
	keys := filepath.Join(work, "keys", "release")
	mustRun(t, "keygen", "-o", keys)
	if st, err := os.Stat(keys + ".key"); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("private key %v, %v", st, err)
	}
	if code, _, errOut := run(t, "keygen", "-o", keys); code == 0 || !strings.Contains(errOut, "exists") {
		t.Fatalf("keygen over an existing key: exit %d, %s", code, errOut)
	}
	ref := reg.Host + "/debvisor/os:7.1.0"

	stdout, stderr := mustRun(t, "push", out, ref, "--sign-key", keys+".key", "--insecure-http", "--progress", "json")
	var res struct {
		Ref, Pinned, Digest, Version string
		Uploaded                     int64    `json:"uploaded_bytes"`
		Signed                       []string `json:"signed_by"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("push result %q: %v", stdout, err)
	}
	if res.Version != "7.1.0" || res.Uploaded < build.Slot.Size || len(res.Signed) != 1 || res.Pinned != reg.Host+"/debvisor/os@"+res.Digest {
		t.Fatalf("push result %+v", res)
	}
	var phases []string
	sawBytes := false
	for _, ev := range events(t, stderr) {
		if ev.Event == "done" {
			phases = append(phases, ev.Phase)
		}
		if ev.Event == "bytes" && ev.Phase == "push" && ev.Bytes == ev.BytesTotal && ev.BytesTotal > 0 {
			sawBytes = true
		}
	}
	if strings.Join(phases, ",") != "read,push,sign" || !sawBytes {
		t.Fatalf("phases %v, final bytes event %v:\n%s", phases, sawBytes, stderr)
	}

	stdout, _ = mustRun(t, "push", out, ref, "--insecure-http", "--progress", "quiet")
	if strings.TrimSpace(stdout) != res.Pinned {
		t.Fatalf("quiet push printed %q, want %q", stdout, res.Pinned)
	}
	stdout, _ = mustRun(t, "push", out, ref, "--insecure-http", "--progress", "json")
	var again struct {
		Uploaded int64 `json:"uploaded_bytes"`
	}
	if err := json.Unmarshal([]byte(stdout), &again); err != nil || again.Uploaded != 0 {
		t.Fatalf("re-push uploaded %d bytes (%v)", again.Uploaded, err)
	}

	stdout, _ = mustRun(t, "verify", ref, "--key", keys+".pub", "--insecure-http", "--progress", "plain")
	if !strings.Contains(stdout, "DebVisor 7.1.0 (kernel 6.1.0-40-amd64, amd64), signed by key") {
		t.Fatalf("verify printed %q", stdout)
	}

	dest := filepath.Join(work, "pulled")
	stdout, _ = mustRun(t, "pull", ref, dest, "--key", keys+".pub", "--insecure-http", "--progress", "plain")
	if got := strings.Fields(stdout); len(got) != 3 {
		t.Fatalf("pull printed %q", stdout)
	}
	for _, f := range []string{"debvisor.raw", osimage.ManifestFile} {
		if a, b := artifacttest.FileDigest(t, filepath.Join(out, f)), artifacttest.FileDigest(t, filepath.Join(dest, f)); a != b {
			t.Fatalf("pulled %s differs", f)
		}
	}
	if got := artifacttest.FileDigest(t, filepath.Join(dest, artifact.SlotFile)); got != build.Slot.Digest {
		t.Fatalf("pulled slot %s, want %s", got, build.Slot.Digest)
	}
	// Only the slot, as an upgrade would fetch it.
	slotOnly := filepath.Join(work, "slot-only")
	mustRun(t, "pull", ref, slotOnly, "--key", keys+".pub", "--insecure-http", "--artifact", "slot", "--progress", "quiet")
	if _, err := os.Stat(filepath.Join(slotOnly, "debvisor.raw")); !os.IsNotExist(err) {
		t.Fatalf("--artifact slot wrote the disk image (%v)", err)
	}
}

// TestCommandFailures: what a user gets wrong fails with exit 1, a clear
// message, and no file written.
func TestCommandFailures(t *testing.T) {
	reg := registrytest.StartDistribution(t, registrytest.DistributionConfig{})
	work := t.TempDir()
	out := filepath.Join(work, "out")
	artifacttest.Write(t, out, artifacttest.Spec{SlotSize: 1 << 20})
	mustRun(t, "keygen", "-o", filepath.Join(work, "a"))
	mustRun(t, "keygen", "-o", filepath.Join(work, "b"))
	signed := reg.Host + "/signed:1"
	mustRun(t, "push", out, signed, "--sign-key", filepath.Join(work, "a.key"), "--insecure-http", "--progress", "quiet")
	unsigned := reg.Host + "/unsigned:1"
	mustRun(t, "push", out, unsigned, "--insecure-http", "--progress", "quiet")
	dead := registrytest.FreeAddr(t) + "/os:1"
	dest := filepath.Join(work, "dest")

	tests := []struct {
		name string
		args []string
		want string
	}{
		{"pull without a key", []string{"pull", signed, dest, "--insecure-http"}, "--key PUBLIC_KEY is required"},
		{"pull with the wrong key", []string{"pull", signed, dest, "--key", filepath.Join(work, "b.pub"), "--insecure-http"}, "signed only by untrusted keys"},
		{"pull unsigned", []string{"pull", unsigned, dest, "--key", filepath.Join(work, "a.pub"), "--insecure-http"}, "no signature"},
		{"pull from nowhere", []string{"pull", dead, dest, "--key", filepath.Join(work, "a.pub"), "--insecure-http"}, "unreachable"},
		{"plain HTTP not asked for", []string{"pull", signed, dest, "--key", filepath.Join(work, "a.pub")}, "--insecure-http"},
		{"verify unsigned", []string{"verify", unsigned, "--key", filepath.Join(work, "a.pub"), "--insecure-http"}, "no signature"},
		{"private key as public", []string{"verify", signed, "--key", filepath.Join(work, "a.key"), "--insecure-http"}, `want "PUBLIC KEY"`},
		{"push a directory without a release", []string{"push", work, signed, "--insecure-http"}, "manifest.json"},
		{"unknown artifact", []string{"push", out, signed, "--artifact", "iso", "--insecure-http"}, "unknown artifact"},
		{"sign-key without push", []string{"build", "-o", dest, "--sign-key", filepath.Join(work, "a.key")}, "--sign-key needs --push"},
		{"build --push to a bad reference", []string{"build", "-o", dest, "--push", "UPPER/Case::x"}, "--push"},
		{"encrypted key without password", []string{"sign", signed, "--key", writeEncrypted(t, work), "--insecure-http"}, "set COSIGN_PASSWORD"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("COSIGN_PASSWORD", "")
			os.Unsetenv("COSIGN_PASSWORD")
			code, _, errOut := run(t, append(tt.args, "--progress", "plain")...)
			if code != 1 || !strings.Contains(errOut, tt.want) {
				t.Fatalf("exit %d, stderr:\n%s\nwant %q", code, errOut, tt.want)
			}
			if _, err := os.Stat(dest); !os.IsNotExist(err) {
				t.Fatalf("%s was created by a failed command", dest)
			}
		})
	}
}

// writeEncrypted writes a cosign-format encrypted key header: enough to
// ask for the password before anything else is read.
func writeEncrypted(t *testing.T, dir string) string {
	t.Helper()
	p := filepath.Join(dir, "cosign.key")
	if err := os.WriteFile(p, []byte("-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\ne30=\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}
