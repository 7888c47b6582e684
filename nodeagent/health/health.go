// Package health owns the node's health checks: a registry of named checks,
// running them (all or some) and the summary the API reports.
package health

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// Check is one named probe. A failing critical check makes the node FAILING;
// any other failure makes it DEGRADED.
type Check struct {
	Name     string
	Critical bool
	// Timeout bounds one run; 10 s when zero.
	Timeout time.Duration
	Run     func(ctx context.Context) error
}

// Registry holds the checks and the last summary.
type Registry struct {
	now func() time.Time

	mu     sync.Mutex
	checks []Check
	last   *v1.HealthSummary
}

// NewRegistry returns an empty registry; now is the clock (time.Now if nil).
func NewRegistry(now func() time.Time) *Registry {
	if now == nil {
		now = time.Now
	}
	return &Registry{now: now, last: &v1.HealthSummary{Status: v1.HealthSummary_STATUS_UNSPECIFIED}}
}

// Add registers a check; names must be unique.
func (r *Registry) Add(c Check) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, x := range r.checks {
		if x.Name == c.Name {
			return fmt.Errorf("health check %q registered twice", c.Name)
		}
	}
	r.checks = append(r.checks, c)
	return nil
}

// Names lists the registered checks in registration order.
func (r *Registry) Names() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]string, len(r.checks))
	for i, c := range r.checks {
		out[i] = c.Name
	}
	return out
}

// Select returns the named checks, or all when names is empty. An unknown
// name is an error naming its index in names.
func (r *Registry) Select(names []string) ([]Check, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(names) == 0 {
		return slices.Clone(r.checks), nil
	}
	var out []Check
	for i, n := range names {
		idx := slices.IndexFunc(r.checks, func(c Check) bool { return c.Name == n })
		if idx < 0 {
			return nil, fmt.Errorf("checks[%d]: unknown health check %q", i, n)
		}
		out = append(out, r.checks[idx])
	}
	return out, nil
}

// RunOne runs a single check with its timeout.
func (r *Registry) RunOne(ctx context.Context, c Check) *v1.HealthCheck {
	timeout := c.Timeout
	if timeout == 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := r.now()
	err := c.Run(ctx)
	res := &v1.HealthCheck{Name: c.Name, Ok: err == nil, Critical: c.Critical, Duration: durationpb.New(r.now().Sub(start))}
	if err != nil {
		res.Message = err.Error()
	}
	return res
}

// Record merges results into the summary and recomputes the status.
func (r *Registry) Record(results []*v1.HealthCheck) *v1.HealthSummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	merged := map[string]*v1.HealthCheck{}
	for _, c := range r.last.GetChecks() {
		merged[c.Name] = c
	}
	for _, c := range results {
		merged[c.Name] = c
	}
	s := &v1.HealthSummary{CheckTime: timestamppb.New(r.now()), Status: v1.HealthSummary_STATUS_HEALTHY}
	for _, c := range r.checks { // registration order, stable output
		res, ok := merged[c.Name]
		if !ok {
			continue
		}
		s.Checks = append(s.Checks, res)
		switch {
		case !res.Ok && res.Critical:
			s.Status = v1.HealthSummary_STATUS_FAILING
		case !res.Ok && s.Status == v1.HealthSummary_STATUS_HEALTHY:
			s.Status = v1.HealthSummary_STATUS_DEGRADED
		}
	}
	r.last = s
	return proto.Clone(s).(*v1.HealthSummary)
}

// RunAll runs every check and records the result.
func (r *Registry) RunAll(ctx context.Context) *v1.HealthSummary {
	checks, _ := r.Select(nil)
	results := make([]*v1.HealthCheck, 0, len(checks))
	for _, c := range checks {
		results = append(results, r.RunOne(ctx, c))
	}
	return r.Record(results)
}

// Loop runs every check each interval until ctx ends. It never fails: a
// failing check is a result, not an error of the loop.
func (r *Registry) Loop(ctx context.Context, interval time.Duration) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		r.RunAll(ctx)
	}
}

// Summary returns the last recorded summary.
func (r *Registry) Summary() *v1.HealthSummary {
	r.mu.Lock()
	defer r.mu.Unlock()
	return proto.Clone(r.last).(*v1.HealthSummary)
}

// DirWritable fails when a file cannot be created and synced in dir.
func DirWritable(dir string) func(context.Context) error {
	return func(context.Context) error {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		f, err := os.CreateTemp(dir, ".health-*")
		if err != nil {
			return fmt.Errorf("%s is not writable: %w", dir, err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if _, err := f.WriteString("ok"); err != nil {
			return err
		}
		return f.Sync()
	}
}

// FreeSpace fails when the filesystem holding dir has less than minFree
// (a fraction, e.g. 0.05) of its blocks available.
func FreeSpace(dir string, minFree float64) func(context.Context) error {
	return func(context.Context) error {
		var st unix.Statfs_t
		if err := unix.Statfs(filepath.Clean(dir), &st); err != nil {
			return fmt.Errorf("statfs %s: %w", dir, err)
		}
		if st.Blocks == 0 {
			return errors.New("filesystem reports no blocks")
		}
		free := float64(st.Bavail) / float64(st.Blocks)
		if free < minFree {
			return fmt.Errorf("%s has %.1f%% free, below %.1f%%", dir, free*100, minFree*100)
		}
		return nil
	}
}
