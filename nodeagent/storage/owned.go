package storage

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"

	"github.com/google/uuid"

	"github.com/debvisor/debvisor/internal/atomicfile"
)

// ownedPool records a pool the agent created, keyed by libvirt's UUID so a
// pool of the same name defined later behind the agent's back is not
// mistaken for it.
type ownedPool struct {
	UUID string `json:"uuid"`
	// CreatedStorage: the agent made the pool's directory (it did not
	// exist) or built its device, so delete_storage may remove it.
	CreatedStorage bool `json:"created_storage"`
}

// ownership is the agent's record of the pools it created, a small JSON
// file in the state dir written atomically (temp file, fsync, rename).
type ownership struct {
	mu   sync.Mutex
	file string // "" keeps nothing: every pool counts as foreign
}

func newOwnership(stateDir string) *ownership {
	if stateDir == "" {
		return &ownership{}
	}
	return &ownership{file: filepath.Join(stateDir, "storage", "pools.json")}
}

func (o *ownership) load() (map[string]ownedPool, error) {
	out := map[string]ownedPool{}
	if o.file == "" {
		return out, nil
	}
	b, err := os.ReadFile(o.file)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		return nil, fmt.Errorf("%s: %w", o.file, err)
	}
	return out, nil
}

func (o *ownership) save(m map[string]ownedPool) error {
	if o.file == "" {
		return nil
	}
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(o.file), 0o750); err != nil {
		return err
	}
	return atomicfile.WriteFile(o.file, append(b, '\n'), 0o640)
}

func (o *ownership) get(name string) (ownedPool, bool, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	m, err := o.load()
	if err != nil {
		return ownedPool{}, false, err
	}
	p, ok := m[name]
	return p, ok, nil
}

func (o *ownership) add(name string, p ownedPool) error {
	if o.file == "" {
		return nil
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	m, err := o.load()
	if err != nil {
		return err
	}
	m[name] = p
	return o.save(m)
}

func (o *ownership) remove(name string) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	m, err := o.load()
	if err != nil {
		return err
	}
	if _, ok := m[name]; !ok {
		return nil
	}
	delete(m, name)
	return o.save(m)
}

// uuidString renders libvirt's raw UUID the way pool XML writes it.
func uuidString(u [16]byte) string { return uuid.UUID(u).String() }
