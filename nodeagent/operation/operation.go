// Package operation owns the agent's long-running work: every mutation that
// can outlive a request runs here as an Operation with an id, ordered phases
// and progress, that clients can list, wait for and cancel.
//
// Operations that name the same lock keys ("vm/web-1", "pool/default") run
// one after another in arrival order, so concurrent clients never see
// libvirt's lock errors; operations on different keys run in parallel.
package operation

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/fault"
)

// ErrNotFound is returned for an unknown operation id.
var ErrNotFound = errors.New("operation not found")

// Spec describes an operation before it starts.
type Spec struct {
	Kind   string
	Target string
	// Phases in the order the function will enter them.
	Phases []string
	// Locks are resource keys held for the operation's whole run.
	Locks       []string
	RequestedBy string
}

// Func does the work. It must return promptly once ctx is cancelled.
type Func func(ctx context.Context, p *Progress) error

// Manager runs and remembers operations.
type Manager struct {
	log     *slog.Logger
	now     func() time.Time
	keep    int
	baseCtx context.Context
	stop    context.CancelFunc
	wg      sync.WaitGroup

	mu    sync.Mutex
	ops   map[string]*op
	order []string // ids, oldest first
	locks map[string]chan struct{}
	// requests maps a retryable request (Request.key) to its operation's
	// id, for as long as the operation is remembered.
	requests map[string]string
}

type op struct {
	mu     sync.Mutex
	pb     *v1.Operation
	cancel context.CancelFunc
	done   chan struct{}
	// request and hash: the retryable request that started it, if any.
	request, hash string
}

// Request identifies a client request that may be sent again after its
// answer was lost: StartOnce returns the operation it started instead of
// running the work twice.
type Request struct {
	// Scope separates the request ids of different calls ("vm.create").
	Scope string
	// ID is the client's request id.
	ID string
	// Hash stands for what the request asked for; the same id with
	// another hash is a different request and is refused.
	Hash string
}

func (r Request) key() string { return r.Scope + "\x00" + r.ID }

// Option configures a Manager.
type Option func(*Manager)

// WithClock replaces time.Now.
func WithClock(now func() time.Time) Option { return func(m *Manager) { m.now = now } }

// WithHistory sets how many finished operations are remembered (default 1000).
func WithHistory(n int) Option { return func(m *Manager) { m.keep = n } }

// NewManager returns a Manager. Close it to cancel running work.
func NewManager(log *slog.Logger, opts ...Option) *Manager {
	ctx, cancel := context.WithCancel(context.Background())
	m := &Manager{
		log:      log,
		now:      time.Now,
		keep:     1000,
		baseCtx:  ctx,
		stop:     cancel,
		ops:      map[string]*op{},
		locks:    map[string]chan struct{}{},
		requests: map[string]string{},
	}
	for _, o := range opts {
		o(m)
	}
	return m
}

// Start queues fn and returns the new operation at once.
func (m *Manager) Start(spec Spec, fn Func) *v1.Operation {
	op, _, _ := m.start(spec, nil, fn)
	return op
}

// StartOnce is Start for a retryable request: when an operation for req
// is remembered, it is returned (started false) and fn is not run; the
// same request id with a different hash is an Invalid error on
// "request_id".
func (m *Manager) StartOnce(spec Spec, req Request, fn Func) (_ *v1.Operation, started bool, _ error) {
	return m.start(spec, &req, fn)
}

// Lookup returns the remembered operation of req, if any (see StartOnce).
func (m *Manager) Lookup(req Request) (*v1.Operation, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, err := m.requestLocked(req)
	if o == nil || err != nil {
		return nil, false, err
	}
	return o.snapshot(), true, nil
}

func (m *Manager) requestLocked(req Request) (*op, error) {
	id, ok := m.requests[req.key()]
	if !ok {
		return nil, nil
	}
	o := m.ops[id]
	if o.hash != req.Hash {
		return nil, fault.Invalidf("request_id", "%q was already used for a different request (operation %s on %s); use a new request_id", req.ID, id, o.pb.Target)
	}
	return o, nil
}

func (m *Manager) start(spec Spec, req *Request, fn Func) (*v1.Operation, bool, error) {
	id := newID()
	ctx, cancel := context.WithCancel(m.baseCtx)
	o := &op{
		pb: &v1.Operation{
			Id:          id,
			Kind:        spec.Kind,
			Target:      spec.Target,
			State:       v1.Operation_STATE_PENDING,
			Phases:      slices.Clone(spec.Phases),
			CreateTime:  timestamppb.New(m.now()),
			RequestedBy: spec.RequestedBy,
		},
		cancel: cancel,
		done:   make(chan struct{}),
	}
	locks := slices.Clone(spec.Locks)
	sort.Strings(locks) // a global order makes multi-key locking deadlock-free
	locks = slices.Compact(locks)

	m.mu.Lock()
	if req != nil {
		prev, err := m.requestLocked(*req)
		if prev != nil || err != nil {
			m.mu.Unlock()
			cancel()
			if err != nil {
				return nil, false, err
			}
			return prev.snapshot(), false, nil
		}
		o.request, o.hash = req.key(), req.Hash
		m.requests[o.request] = id
	}
	m.ops[id] = o
	m.order = append(m.order, id)
	m.gcLocked()
	m.mu.Unlock()

	m.wg.Add(1)
	go m.run(ctx, o, locks, fn)
	return o.snapshot(), true, nil
}

func (m *Manager) run(ctx context.Context, o *op, locks []string, fn Func) {
	defer m.wg.Done()
	defer close(o.done)
	defer o.cancel()
	log := m.log.With("op", o.pb.Id, "kind", o.pb.Kind, "target", o.pb.Target)

	var held []chan struct{}
	defer func() {
		for _, l := range held {
			<-l
		}
	}()
	for _, k := range locks {
		l := m.lock(k)
		select {
		case l <- struct{}{}:
			held = append(held, l)
		case <-ctx.Done():
			m.finish(o, ctx.Err(), log)
			return
		}
	}

	o.mu.Lock()
	o.pb.State = v1.Operation_STATE_RUNNING
	o.pb.StartTime = timestamppb.New(m.now())
	if len(o.pb.Phases) > 0 {
		o.pb.Phase = o.pb.Phases[0]
	}
	o.mu.Unlock()
	log.Debug("operation started")

	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fault.Errorf(fault.Internal, "operation panicked: %v", r)
			}
		}()
		return fn(ctx, &Progress{op: o})
	}()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	m.finish(o, err, log)
}

func (m *Manager) finish(o *op, err error, log *slog.Logger) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.pb.EndTime = timestamppb.New(m.now())
	switch {
	case err == nil:
		o.pb.State = v1.Operation_STATE_SUCCEEDED
		log.Info("operation succeeded")
	case errors.Is(err, context.Canceled):
		o.pb.State = v1.Operation_STATE_CANCELLED
		o.pb.ErrorCode = int32(codes.Canceled)
		o.pb.Error = "cancelled"
		log.Info("operation cancelled")
	default:
		o.pb.State = v1.Operation_STATE_FAILED
		o.pb.ErrorCode = int32(fault.KindOf(err).Code())
		o.pb.Error = err.Error()
		if st, ok := status.FromError(err); ok && st.Message() != "" {
			o.pb.Error = st.Message()
		}
		log.Warn("operation failed", "err", err)
	}
}

func (m *Manager) lock(key string) chan struct{} {
	m.mu.Lock()
	defer m.mu.Unlock()
	l, ok := m.locks[key]
	if !ok {
		l = make(chan struct{}, 1)
		m.locks[key] = l
	}
	return l
}

// gcLocked forgets the oldest finished operations beyond the history size.
func (m *Manager) gcLocked() {
	excess := len(m.order) - m.keep
	if excess <= 0 {
		return
	}
	kept := m.order[:0]
	for _, id := range m.order {
		o := m.ops[id]
		if excess > 0 && o.ended() {
			delete(m.ops, id)
			if o.request != "" && m.requests[o.request] == id {
				delete(m.requests, o.request)
			}
			excess--
			continue
		}
		kept = append(kept, id)
	}
	m.order = kept
}

// Get returns a snapshot of one operation.
func (m *Manager) Get(id string) (*v1.Operation, error) {
	o, err := m.find(id)
	if err != nil {
		return nil, err
	}
	return o.snapshot(), nil
}

func (m *Manager) find(id string) (*op, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	o, ok := m.ops[id]
	if !ok {
		return nil, fmt.Errorf("%w: %q", ErrNotFound, id)
	}
	return o, nil
}

// Filter selects operations in List.
type Filter struct {
	States []v1.Operation_State
	Kind   string
}

// List returns snapshots of matching operations, newest first.
func (m *Manager) List(f Filter) []*v1.Operation {
	m.mu.Lock()
	ops := make([]*op, 0, len(m.order))
	for i := len(m.order) - 1; i >= 0; i-- {
		ops = append(ops, m.ops[m.order[i]])
	}
	m.mu.Unlock()
	var out []*v1.Operation
	for _, o := range ops {
		s := o.snapshot()
		if f.Kind != "" && s.Kind != f.Kind {
			continue
		}
		if len(f.States) > 0 && !slices.Contains(f.States, s.State) {
			continue
		}
		out = append(out, s)
	}
	return out
}

// Wait blocks until the operation ends or ctx is done, and returns its state.
// A ctx that ends first is not an error: the caller gets the running state.
func (m *Manager) Wait(ctx context.Context, id string) (*v1.Operation, error) {
	o, err := m.find(id)
	if err != nil {
		return nil, err
	}
	select {
	case <-o.done:
	case <-ctx.Done():
	}
	return o.snapshot(), nil
}

// Cancel asks the operation to stop and returns its state; it does not wait.
func (m *Manager) Cancel(id string) (*v1.Operation, error) {
	o, err := m.find(id)
	if err != nil {
		return nil, err
	}
	o.cancel()
	return o.snapshot(), nil
}

// Close cancels all operations and waits for them until ctx ends.
func (m *Manager) Close(ctx context.Context) error {
	m.stop()
	done := make(chan struct{})
	go func() { m.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("operations still running at shutdown: %w", ctx.Err())
	}
}

func (o *op) snapshot() *v1.Operation {
	o.mu.Lock()
	defer o.mu.Unlock()
	return proto.Clone(o.pb).(*v1.Operation)
}

func (o *op) ended() bool {
	select {
	case <-o.done:
		return true
	default:
		return false
	}
}

// Progress lets an operation report where it is.
type Progress struct{ op *op }

// Phase enters the named phase and resets the counters.
func (p *Progress) Phase(name string) {
	p.op.mu.Lock()
	defer p.op.mu.Unlock()
	p.op.pb.Phase = name
	p.op.pb.Done, p.op.pb.Total = 0, 0
	if !slices.Contains(p.op.pb.Phases, name) {
		p.op.pb.Phases = append(p.op.pb.Phases, name)
	}
}

// Set records done out of total units in the current phase.
func (p *Progress) Set(done, total int64) {
	p.op.mu.Lock()
	defer p.op.mu.Unlock()
	p.op.pb.Done, p.op.pb.Total = done, total
}

// Message sets the human-readable status line.
func (p *Progress) Message(format string, args ...any) {
	p.op.mu.Lock()
	defer p.op.mu.Unlock()
	p.op.pb.Message = fmt.Sprintf(format, args...)
}

// Result records a key of the operation's result.
func (p *Progress) Result(key, value string) {
	p.op.mu.Lock()
	defer p.op.mu.Unlock()
	if p.op.pb.Result == nil {
		p.op.pb.Result = map[string]string{}
	}
	p.op.pb.Result[key] = value
}

// ID returns the operation id, for logs.
func (p *Progress) ID() string { return p.op.pb.Id }

func newID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return "op-" + hex.EncodeToString(b[:])
}
