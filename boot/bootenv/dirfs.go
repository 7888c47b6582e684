package bootenv

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// DirFS is an ESP mounted at a directory, such as osimage.ESPMount
// (/boot/efi) on a running node.
type DirFS struct {
	Root string
}

var _ FS = DirFS{}

func (d DirFS) path(name string) (string, error) {
	if !fs.ValidPath(name) || name == "." {
		return "", fmt.Errorf("%q is not a path inside the ESP", name)
	}
	return filepath.Join(d.Root, filepath.FromSlash(name)), nil
}

// ReadFile reads name below Root.
func (d DirFS) ReadFile(_ context.Context, name string) ([]byte, error) {
	p, err := d.path(name)
	if err != nil {
		return nil, err
	}
	return os.ReadFile(p)
}

// WriteFile overwrites name below Root in place (an existing file keeps its
// clusters on FAT, as GRUB's save_env does), truncates it to len(data) and
// fsyncs it; a file or directory it had to create is made durable by
// fsyncing its parent too.
func (d DirFS) WriteFile(_ context.Context, name string, data []byte) error {
	p, err := d.path(name)
	if err != nil {
		return err
	}
	dir := filepath.Dir(p)
	var newDir bool
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		newDir = true
	}
	_, statErr := os.Stat(p)
	newFile := errors.Is(statErr, fs.ErrNotExist)
	f, err := os.OpenFile(p, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return err
	}
	if _, err := f.WriteAt(data, 0); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", p, err)
	}
	if err := f.Truncate(int64(len(data))); err != nil {
		f.Close()
		return fmt.Errorf("truncate %s: %w", p, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("fsync %s: %w", p, err)
	}
	if err := f.Close(); err != nil {
		return err
	}
	if newFile {
		if err := syncDir(dir); err != nil {
			return err
		}
	}
	if newDir {
		return syncDir(filepath.Dir(dir))
	}
	return nil
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", dir, err)
	}
	return nil
}
