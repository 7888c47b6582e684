package bootenv

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"

	"github.com/debvisor/debvisor/osimage"
)

// FS is the filesystem holding the two copies: the ESP, mounted (DirFS) or
// inside a disk image or block device (esp.FS). Names are slash-separated
// paths relative to the ESP's root, such as osimage.ESPGrubEnv.
type FS interface {
	// ReadFile returns a file's contents; a missing file is an error
	// wrapping fs.ErrNotExist.
	ReadFile(ctx context.Context, name string) ([]byte, error)
	// WriteFile replaces a file's contents, creating it (and its directory)
	// if needed, and returns only once the contents are durable (fsync).
	WriteFile(ctx context.Context, name string, data []byte) error
}

// Store reads and writes the environment as its two copies on the ESP,
// grub/grubenv (primary) and grub/grubenv.bak (backup).
//
// Its invariant is that at every instant at least one copy holds a complete
// environment, old or new: Save writes one copy, durably, and reads it back
// before it touches the other, starting with the damaged one when only one
// is damaged, and Load repairs a damaged or stale copy from the good one.
// GRUB's own save_env in grub.cfg updates the copies in the same order. A
// torn write inside one copy can only mix the old and new variables when
// they straddle the block's 512-byte sectors; DebVisor's variables fit the
// first sector many times over.
type Store struct {
	fs              FS
	log             *slog.Logger
	primary, backup string
	afterCopy       func(name string)
}

// Option configures a Store.
type Option func(*Store)

// WithLogger sets where repairs are reported (default: discarded).
func WithLogger(l *slog.Logger) Option { return func(s *Store) { s.log = l } }

// WithAfterCopy calls fn after each copy is written (and read back). The
// power-cut tests use it to widen the window between the two copies so a
// random kill can land inside it; nothing else should.
func WithAfterCopy(fn func(name string)) Option { return func(s *Store) { s.afterCopy = fn } }

// NewStore returns a store over fsys using the ESP paths of the boot
// contract (osimage.ESPGrubEnv, osimage.ESPGrubEnvBackup).
func NewStore(fsys FS, opts ...Option) *Store {
	s := &Store{
		fs:      fsys,
		log:     slog.New(slog.NewTextHandler(io.Discard, nil)),
		primary: osimage.ESPGrubEnv,
		backup:  osimage.ESPGrubEnvBackup,
	}
	for _, o := range opts {
		o(s)
	}
	return s
}

// Read returns both copies as found, without writing anything (inspect
// uses it on read-only images). A copy that cannot be read counts as
// damaged, with the read error as the reason.
func (s *Store) Read(ctx context.Context) (Copies, error) {
	pb, perr := s.fs.ReadFile(ctx, s.primary)
	bb, berr := s.fs.ReadFile(ctx, s.backup)
	c, err := ReadCopies(pb, bb)
	if perr != nil {
		c.PrimaryErr = perr
	}
	if berr != nil {
		c.BackupErr = berr
	}
	if err != nil {
		return c, fmt.Errorf("%w: %s: %w; %s: %w", ErrBothDamaged, s.primary, c.PrimaryErr, s.backup, c.BackupErr)
	}
	return c, nil
}

// Load returns the environment from the good copy and rewrites a damaged
// or stale copy from it, byte for byte. Both copies damaged is an error
// wrapping ErrBothDamaged, and nothing is written then.
func (s *Store) Load(ctx context.Context) (*Env, error) {
	c, err := s.Read(ctx)
	if err != nil {
		return nil, err
	}
	for _, r := range []struct {
		need   bool
		name   string
		reason error
	}{{c.RepairPrimary, s.primary, c.PrimaryErr}, {c.RepairBackup, s.backup, c.BackupErr}} {
		if !r.need {
			continue
		}
		why := "stale (differs from the primary)"
		if r.reason != nil {
			why = r.reason.Error()
		}
		s.log.WarnContext(ctx, "repairing grubenv copy from the other", slog.String("copy", r.name), slog.String("reason", why))
		if err := s.writeCopy(ctx, r.name, c.Good); err != nil {
			return nil, fmt.Errorf("repair %s: %w", r.name, err)
		}
	}
	return c.Env, nil
}

// Save writes e to both copies, one after the other, each durably and read
// back before the next; see Store for the order. A failure leaves at least
// one complete copy (old or new) in place.
func (s *Store) Save(ctx context.Context, e *Env) error {
	data, err := e.Marshal()
	if err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("save grubenv: %w", err)
	}
	// The current state only decides the order; its errors are the reason
	// for saving, not a reason to stop.
	cur, _ := s.Read(ctx)
	order := []string{s.primary, s.backup}
	if cur.PrimaryErr == nil && cur.BackupErr != nil {
		order = []string{s.backup, s.primary}
	}
	// Once the first copy is written the second always follows: stopping
	// between them on cancellation would only leave a stale copy behind.
	for _, name := range order {
		if err := s.writeCopy(context.WithoutCancel(ctx), name, data); err != nil {
			return fmt.Errorf("save grubenv: %s: %w", name, err)
		}
	}
	return nil
}

// writeCopy writes one copy and reads it back, so a copy that did not land
// intact is reported before the other copy is touched.
func (s *Store) writeCopy(ctx context.Context, name string, data []byte) error {
	if err := s.fs.WriteFile(ctx, name, data); err != nil {
		return err
	}
	got, err := s.fs.ReadFile(ctx, name)
	if err != nil {
		return fmt.Errorf("read back: %w", err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("read back %d bytes that differ from the %d written", len(got), len(data))
	}
	if s.afterCopy != nil {
		s.afterCopy(name)
	}
	return nil
}

// Update loads the environment (repairing a copy if needed), applies fn to
// it and saves the result when fn changed anything. It returns the
// environment as saved.
func (s *Store) Update(ctx context.Context, fn func(*Env) error) (*Env, error) {
	cur, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	next := cur.Clone()
	if err := fn(next); err != nil {
		return nil, err
	}
	if next.Equal(cur) {
		return next, nil
	}
	if err := s.Save(ctx, next); err != nil {
		return nil, err
	}
	return next, nil
}

// MarkNotBootable records that slot's contents are about to be replaced
// (Env.MarkNotBootable). It is what a slot writer calls before its first
// byte.
func (s *Store) MarkNotBootable(ctx context.Context, slot osimage.Slot) error {
	_, err := s.Update(ctx, func(e *Env) error { e.MarkNotBootable(slot); return nil })
	if err != nil {
		return fmt.Errorf("mark slot %s not bootable: %w", slot, err)
	}
	return nil
}

// Activate makes a written and verified slot the next boot
// (Env.Activate).
func (s *Store) Activate(ctx context.Context, slot osimage.Slot) error {
	_, err := s.Update(ctx, func(e *Env) error { e.Activate(slot); return nil })
	if err != nil {
		return fmt.Errorf("activate slot %s: %w", slot, err)
	}
	return nil
}

// Commit records a healthy boot of slot (Env.Commit).
func (s *Store) Commit(ctx context.Context, slot osimage.Slot) error {
	_, err := s.Update(ctx, func(e *Env) error { e.Commit(slot); return nil })
	if err != nil {
		return fmt.Errorf("commit slot %s: %w", slot, err)
	}
	return nil
}
