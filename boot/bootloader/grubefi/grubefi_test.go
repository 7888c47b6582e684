package grubefi

import (
	"bytes"
	"context"
	"io/fs"
	"os/exec"
	"strings"
	"testing"

	"github.com/debvisor/debvisor/boot/bootloader"
	"github.com/debvisor/debvisor/osimage"
)

type memFiles map[string][]byte

func (m memFiles) ReadFile(_ context.Context, n string) ([]byte, error) {
	d, ok := m[n]
	if !ok {
		return nil, fs.ErrNotExist
	}
	return d, nil
}

func (m memFiles) WriteFile(_ context.Context, n string, d []byte) error {
	m[n] = bytes.Clone(d)
	return nil
}

// TestInstallConfigureCheck builds the real BOOTX64.EFI from Debian's
// modules (deterministically), installs and configures it onto an ESP,
// checks it back, and reports each file that goes missing.
func TestInstallConfigureCheck(t *testing.T) {
	if _, err := exec.LookPath("grub-mkimage"); err != nil {
		t.Fatalf("grub-mkimage is required (grub-common): %v", err)
	}
	ctx := context.Background()
	b := New(WithWorkDir(t.TempDir()))
	files := memFiles{}
	tgt := bootloader.Target{ESP: files}
	if err := b.Prepare(ctx, tgt); err != nil {
		t.Fatal(err)
	}
	if len(files) != 0 {
		t.Fatal("Prepare wrote to the ESP")
	}
	if err := b.Install(ctx, tgt); err != nil {
		t.Fatal(err)
	}
	if err := b.Configure(ctx, tgt, bootloader.Config{Timeout: 1, Cmdline: "quiet"}); err != nil {
		t.Fatal(err)
	}
	if st, err := b.Check(ctx, tgt); err != nil || st.Summary == "" {
		t.Fatalf("Check: %+v %v", st, err)
	}
	again, err := New(WithWorkDir(t.TempDir())).Image(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, files[osimage.ESPBootloader]) {
		t.Fatal("grub-mkimage -O x86_64-efi is not deterministic")
	}

	tests := []struct {
		name   string
		mutate func(memFiles)
		want   []string
	}{
		{"no loader", func(m memFiles) { delete(m, osimage.ESPBootloader) }, []string{osimage.ESPBootloader + " missing or empty"}},
		{"empty grub.cfg", func(m memFiles) { m[osimage.ESPGrubCfg] = nil }, []string{osimage.ESPGrubCfg + " missing or empty"}},
		{"both gone", func(m memFiles) { delete(m, osimage.ESPBootloader); delete(m, osimage.ESPGrubCfg) },
			[]string{osimage.ESPBootloader + " missing or empty", osimage.ESPGrubCfg + " missing or empty"}},
		{"not PE", func(m memFiles) { m[osimage.ESPBootloader] = []byte("ELF") }, []string{"not an EFI (PE) executable"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := memFiles{}
			for k, v := range files {
				m[k] = v
			}
			tt.mutate(m)
			_, err := b.Check(ctx, bootloader.Target{ESP: m})
			if err == nil {
				t.Fatal("Check passed")
			}
			var n int
			if j, ok := err.(interface{ Unwrap() []error }); ok {
				n = len(j.Unwrap())
			}
			if n != len(tt.want) {
				t.Errorf("%d problems reported, want %d: %v", n, len(tt.want), err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %v does not mention %q", err, w)
				}
			}
		})
	}
	if err := b.Install(ctx, bootloader.Target{}); err == nil {
		t.Fatal("Install without an ESP succeeded")
	}
}
