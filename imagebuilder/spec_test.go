package imagebuilder

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestDefaultSpec(t *testing.T) {
	s, err := DefaultSpec()
	if err != nil {
		t.Fatal(err)
	}
	if s.Suite != "bookworm" || s.Compression != "xz" || s.SlotSize != GiB || s.Users[0].Name != "root" {
		t.Fatalf("unexpected default spec: %+v", s)
	}
	ex, err := os.ReadFile("../examples/images/default.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ex, DefaultSpecYAML) {
		t.Fatal("examples/images/default.yaml differs from the embedded default spec; copy imagebuilder/default.yaml over it")
	}
}

func TestExampleSpecsParse(t *testing.T) {
	files, _ := filepath.Glob("../examples/images/*.yaml")
	if len(files) < 2 {
		t.Fatalf("want at least 2 example specs, found %v", files)
	}
	for _, f := range files {
		if strings.HasSuffix(f, "preseed.yaml") || strings.HasSuffix(f, "-preseed.yaml") {
			continue
		}
		if _, err := LoadSpec(f); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestParseSpecErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string // substrings of the error: line and field
	}{
		{"unknown key", "suite: bookworm\nslot_sise: 1GiB\n", []string{"slot_sise", "2:"}},
		{"bad size", "suite: bookworm\n\nslot_size: 1 banana\n", []string{"line 3", "slot_size", "banana"}},
		{"size not MiB aligned", "esp_size: 1000000\n", []string{"line 1", "esp_size", "whole number of MiB"}},
		{"slot too small", "compression: xz\nslot_size: 16MiB\n", []string{"line 2", "slot_size", "smaller than"}},
		{"zstd refused", "compression: zstd\n", []string{"line 1", "compression", "GRUB 2.06 cannot read"}},
		{"buggy ESP size", "esp_size: 64MiB\n", []string{"line 1", "esp_size", "fsck.vfat"}},
		{"duplicate user", "users:\n  - name: root\n  - name: root\n", []string{"line 3", "users[1].name", "twice"}},
		{"bad package", "packages:\n  - ok-pkg\n  - Bad_Pkg\n", []string{"line 3", "packages[1]"}},
		{"cmdline sets root", "kernel_cmdline: root=/dev/sda1 quiet\n", []string{"line 1", "kernel_cmdline", "root="}},
		{"cmdline injection", "kernel_cmdline: \"quiet; reboot\"\n", []string{"kernel_cmdline"}},
		{"extra file both", "extra_files:\n  - path: /etc/x\n    content: a\n    source: b\n", []string{"line 2", "extra_files[0]", "exactly one"}},
		{"extra file relative", "extra_files:\n  - path: etc/x\n    content: a\n", []string{"line 2", "extra_files[0].path"}},
		{"mirror not a URL", "mirror: ftp.example\n", []string{"line 1", "mirror"}},
		{"wrong type", "packages: vim\n", []string{"packages"}},
		{"missing preseed", "preseed: nope.yaml\n", []string{"line 1", "preseed"}},
		{"bad yaml", "suite: [\n", []string{"suite"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSpec([]byte(tt.in), t.TempDir())
			if err == nil {
				t.Fatal("spec accepted")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestParseSpecOverridesDefaults(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "motd"), []byte("hi\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := ParseSpec([]byte("compression: gzip\nslot_size: 2GiB\npackages: [vim-tiny]\nextra_files:\n  - path: /etc/motd\n    source: motd\n"), dir)
	if err != nil {
		t.Fatal(err)
	}
	if s.Compression != "gzip" || s.SlotSize != 2*GiB || s.Suite != "bookworm" || s.DataSize != 256*MiB {
		t.Fatalf("overrides/defaults wrong: %+v", s)
	}
	pk := s.AllPackages()
	if !contains(pk, "vim-tiny") || !contains(pk, "linux-image-amd64") {
		t.Fatalf("package set %v", pk)
	}
	d1, err := s.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "motd"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	d2, _ := s.Digest()
	if d1 == d2 {
		t.Fatal("digest ignores the content of referenced files")
	}
}

func TestParseSize(t *testing.T) {
	tests := []struct {
		in   string
		want Size
		err  bool
	}{
		{"1GiB", GiB, false}, {"512MiB", 512 * MiB, false}, {"1G", GiB, false}, {"4096", 4096, false},
		{"2 MiB", 2 * MiB, false}, {"1.5GiB", 0, true}, {"-1", 0, true}, {"99999999999T", 0, true}, {"", 0, true},
	}
	for _, tt := range tests {
		got, err := ParseSize(tt.in)
		if (err != nil) != tt.err || got != tt.want {
			t.Errorf("ParseSize(%q) = %d, %v", tt.in, got, err)
		}
	}
}

func TestHostMirror(t *testing.T) {
	tests := []struct {
		name, file, content, want string
	}{
		{"deb822", "etc/apt/sources.list.d/debian.sources", "Types: deb\nURIs: http://deb.example/debian\nSuites: bookworm\n\nTypes: deb\nURIs: http://deb.example/debian-security\n", "http://deb.example/debian"},
		{"deb822 deb-src first", "etc/apt/sources.list.d/x.sources", "Types: deb-src\nURIs: http://src.example/\n\nTypes: deb\nURIs: http://bin.example/debian/\n", "http://bin.example/debian"},
		{"one-line", "etc/apt/sources.list", "# c\ndeb [arch=amd64 signed-by=/x] http://one.example/debian bookworm main\n", "http://one.example/debian"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			root := t.TempDir()
			p := filepath.Join(root, tt.file)
			os.MkdirAll(filepath.Dir(p), 0o755)
			if err := os.WriteFile(p, []byte(tt.content), 0o644); err != nil {
				t.Fatal(err)
			}
			got, err := HostMirror(root)
			if err != nil || got != tt.want {
				t.Fatalf("HostMirror = %q, %v; want %q", got, err, tt.want)
			}
		})
	}
	if _, err := HostMirror(t.TempDir()); err == nil {
		t.Fatal("no sources: want an error")
	}
}

func FuzzParseSpec(f *testing.F) {
	f.Add(DefaultSpecYAML)
	f.Add([]byte("slot_size: 2GiB\ncompression: gzip\n"))
	f.Add([]byte("users:\n  - name: a\n    ssh_authorized_keys: [ssh-ed25519 AAA]\n"))
	f.Add([]byte("extra_files:\n  - {path: /etc/a, content: b, mode: '0600'}\n"))
	f.Add([]byte("{"))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := ParseSpec(data, "")
		if err != nil {
			if s != nil {
				t.Fatal("spec returned with an error")
			}
			return
		}
		// Whatever parses must satisfy the invariants the builder relies on.
		if s.SlotSize < minSlot || s.SlotSize%MiB != 0 || (s.Compression != "xz" && s.Compression != "gzip") {
			t.Fatalf("invalid spec accepted: %+v", s)
		}
		if _, err := RenderGrubCfg(s); err != nil {
			t.Fatalf("accepted spec cannot render grub.cfg: %v", err)
		}
	})
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}
