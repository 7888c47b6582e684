package upgrade

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/debvisor/debvisor/osimage"

	"github.com/debvisor/debvisor/internal/atomicfile"
)

// Results a slot can have (Slot.last_result in the API).
const (
	ResultInstalled    = "installed"     // written by an installer or the image build
	ResultWriting      = "writing"       // an upgrade is writing it
	ResultWriteFailed  = "write-failed"  // the write or its read-back failed
	ResultStaged       = "staged"        // written, verified, next boot
	ResultCommitted    = "committed"     // booted and passed the health report
	ResultHealthFailed = "health-failed" // booted, health report failed in time
	ResultRolledBack   = "rolled-back"   // booted but never committed (hang, panic, cut)
)

// slotRecord is what the agent knows about one slot beyond GRUB's
// counters. It is keyed by the artifact digest: staging a new image
// replaces the whole record, so a result (or a stale flag) from an earlier
// attempt never applies to a new one.
type slotRecord struct {
	Digest  string    `json:"digest,omitempty"`
	Version string    `json:"version,omitempty"`
	Ref     string    `json:"ref,omitempty"`
	Image   string    `json:"image,omitempty"`
	Result  string    `json:"result,omitempty"`
	Reason  string    `json:"reason,omitempty"`
	Time    time.Time `json:"time"`
}

// final reports whether the record already says how the slot's attempt
// ended badly; the other slot's agent must not overwrite that reason.
func (r slotRecord) final() bool {
	return r.Result == ResultHealthFailed || r.Result == ResultWriteFailed || r.Result == ResultRolledBack
}

type stateFile struct {
	Slots map[osimage.Slot]slotRecord `json:"slots"`
}

// state is the record on the data partition (/var/lib/debvisor/upgrade,
// shared by both slots' agents), written atomically.
type state struct {
	mu   sync.Mutex
	file string
}

func newState(stateDir string) *state {
	return &state{file: filepath.Join(stateDir, "upgrade", "slots.json")}
}

func (s *state) load() (stateFile, error) {
	out := stateFile{Slots: map[osimage.Slot]slotRecord{}}
	b, err := os.ReadFile(s.file)
	if errors.Is(err, fs.ErrNotExist) {
		return out, nil
	}
	if err != nil {
		return out, err
	}
	if err := json.Unmarshal(b, &out); err != nil {
		// A damaged record must not stop upgrades or commits: GRUB's
		// environment is the source of truth for booting; this only adds
		// versions and reasons.
		return stateFile{Slots: map[osimage.Slot]slotRecord{}}, fmt.Errorf("%s is damaged (%w); starting a new record", s.file, err)
	}
	if out.Slots == nil {
		out.Slots = map[osimage.Slot]slotRecord{}
	}
	return out, nil
}

func (s *state) get(slot osimage.Slot) slotRecord {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, _ := s.load()
	return f.Slots[slot]
}

// update applies fn to the record and saves it.
func (s *state) update(fn func(map[osimage.Slot]slotRecord)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	f, _ := s.load()
	fn(f.Slots)
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(s.file), 0o750); err != nil {
		return err
	}
	// Durable when it returns (directory fsync included): without that a
	// power cut right after (the test that found it cut during the slot
	// write) brought back the record from before the write began.
	return atomicfile.WriteFile(s.file, append(b, '\n'), 0o640)
}
