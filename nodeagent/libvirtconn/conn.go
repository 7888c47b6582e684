// Package libvirtconn owns the agent's connections to libvirtd: dialing its
// RPC socket, reconnecting after libvirtd restarts, separate connections for
// reads and for mutations, a deadline on every call, dedicated connections
// for long-lived streams (consoles), and classifying libvirt errors.
//
// Why two connections: libvirtd serves at most max_client_requests (5 by
// default) calls of one client connection at a time and stops reading that
// socket meanwhile. With one shared connection, five slow domain starts
// (seconds each on a loaded host) held every slot, and a GetVM of an
// unrelated VM queued behind all the starts still waiting (30-60 s with 50
// VMs starting). Reads now have their own connection, so they only ever
// wait for other reads.
package libvirtconn

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"

	"github.com/debvisor/debvisor/nodeagent/fault"
)

// DefaultSocket is libvirtd's read-write socket for qemu:///system.
const DefaultSocket = "/var/run/libvirt/libvirt-sock"

// Defaults for Config.
const (
	DefaultDialTimeout  = 5 * time.Second
	DefaultReadTimeout  = 10 * time.Second
	DefaultWriteTimeout = 2 * time.Minute
	DefaultSlots        = 5
)

// Config says where libvirtd is and how long its calls may take.
type Config struct {
	// Socket is the path of libvirtd's unix socket.
	Socket string
	// URI is the driver to open; qemu:///system when empty.
	URI string
	// DialTimeout bounds each connection attempt (5 s when 0).
	DialTimeout time.Duration
	// ReadTimeout bounds each call on the read connection (10 s when 0).
	ReadTimeout time.Duration
	// WriteTimeout bounds each call on the write connection (2 min when 0):
	// a domain start on a loaded host takes seconds, not minutes. Copies
	// and streams (volume upload, clone) are bounded by their context only.
	WriteTimeout time.Duration
	// Slots is how many calls the agent has in flight on one connection
	// (5 when 0): libvirtd's max_client_requests, whose default is 5. More
	// would only queue inside libvirtd, where a call's deadline would also
	// count the time spent behind others. Calls beyond it wait for a slot:
	// reads within ReadTimeout, mutations for as long as their context
	// allows (the operation queue's order). A call whose caller gave up
	// keeps its slot until libvirtd answers, as libvirtd counts it too.
	Slots int
}

// Conn is the agent's self-healing pair of connections to libvirtd (one
// for reads, one for mutations). It is safe for concurrent use: go-libvirt
// multiplexes calls over each socket.
type Conn struct {
	cfg   Config
	log   *slog.Logger
	read  *lane
	write *lane
}

// lane is one connection and the calls in flight on it.
type lane struct {
	name    string
	timeout time.Duration
	// boundedQueue: the wait for a slot counts against timeout (reads);
	// otherwise only the context bounds it (mutations queue in order).
	boundedQueue bool
	// slots holds a token per call in flight.
	slots chan struct{}

	mu sync.Mutex
	lv *libvirt.Libvirt
}

// New returns a Conn that connects on first use, so the agent starts even
// when libvirtd is down; calls then fail with FailedPrecondition.
func New(cfg Config, log *slog.Logger) *Conn {
	if cfg.URI == "" {
		cfg.URI = string(libvirt.QEMUSystem)
	}
	if cfg.DialTimeout == 0 {
		cfg.DialTimeout = DefaultDialTimeout
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = DefaultReadTimeout
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = DefaultWriteTimeout
	}
	if cfg.Slots == 0 {
		cfg.Slots = DefaultSlots
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Conn{
		cfg:   cfg,
		log:   log,
		read:  &lane{name: "read", timeout: cfg.ReadTimeout, boundedQueue: true, slots: make(chan struct{}, cfg.Slots)},
		write: &lane{name: "write", timeout: cfg.WriteTimeout, slots: make(chan struct{}, cfg.Slots)},
	}
}

// Reader returns a client on the read connection, bound to ctx: lookups,
// states, XML and listings. It never waits behind a mutation's calls.
func (c *Conn) Reader(ctx context.Context) (*Client, error) { return c.client(ctx, c.read) }

// Client returns a client on the write connection, bound to ctx, for
// mutations and the reads that decide them.
func (c *Conn) Client(ctx context.Context) (*Client, error) { return c.client(ctx, c.write) }

func (c *Conn) client(ctx context.Context, l *lane) (*Client, error) {
	lv, err := c.connected(ctx, l)
	if err != nil {
		return nil, err
	}
	return &Client{lv: lv, ctx: ctx, lane: l}, nil
}

// connected returns the lane's connection, reconnecting when it was lost.
func (c *Conn) connected(ctx context.Context, l *lane) (*libvirt.Libvirt, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.lv != nil && l.lv.IsConnected() {
		return l.lv, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fault.Wrap(err, "connect to libvirtd")
	}
	lv, err := c.dial()
	if err != nil {
		return nil, err
	}
	if l.lv != nil {
		c.log.Info("reconnected to libvirtd", "socket", c.cfg.Socket, "connection", l.name)
	}
	l.lv = lv
	return lv, nil
}

// Dedicated opens a separate connection for a long-lived stream such as a
// console; closing it is how the stream is torn down on libvirtd's side.
func (c *Conn) Dedicated(context.Context) (*libvirt.Libvirt, error) {
	return c.dial()
}

func (c *Conn) dial() (*libvirt.Libvirt, error) {
	lv := libvirt.NewWithDialer(dialers.NewLocal(
		dialers.WithSocket(c.cfg.Socket), dialers.WithLocalTimeout(c.cfg.DialTimeout)))
	if err := lv.ConnectToURI(libvirt.ConnectURI(c.cfg.URI)); err != nil {
		return nil, fault.Errorf(fault.FailedPrecondition, "libvirt not available: connect %s via %s: %v", c.cfg.URI, c.cfg.Socket, err)
	}
	return lv, nil
}

// Close disconnects both connections.
func (c *Conn) Close() error {
	var errs []error
	for _, l := range []*lane{c.read, c.write} {
		l.mu.Lock()
		if l.lv != nil && l.lv.IsConnected() {
			errs = append(errs, l.lv.Disconnect())
		}
		l.lv = nil
		l.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Code returns libvirt's error number for err, or -1 when err is not a
// libvirt error.
func Code(err error) libvirt.ErrorNumber {
	var le libvirt.Error
	if errors.As(err, &le) {
		return libvirt.ErrorNumber(le.Code)
	}
	return -1
}

// Is reports whether err is the libvirt error number n.
func Is(err error, n libvirt.ErrorNumber) bool { return Code(err) == n }

// NotFound reports whether err says a domain, pool or volume does not exist.
func NotFound(err error) bool {
	switch Code(err) {
	case libvirt.ErrNoDomain, libvirt.ErrNoStoragePool, libvirt.ErrNoStorageVol:
		return true
	}
	return false
}

// Status classifies a libvirt error by its error number (fault kinds) with
// what was being done in front; errors that already have a kind keep it.
func Status(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	var fe *fault.Error
	if errors.As(err, &fe) || errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return fault.Wrap(err, "%s", what)
	}
	kind := fault.Internal
	switch Code(err) {
	case -1:
		// Not an error libvirtd sent: the connection broke (libvirtd
		// restarted or went away) while the call was in flight.
		kind = fault.Unavailable
	case libvirt.ErrNoDomain, libvirt.ErrNoStoragePool, libvirt.ErrNoStorageVol:
		kind = fault.NotFound
	case libvirt.ErrOperationInvalid, libvirt.ErrOperationFailed:
		kind = fault.FailedPrecondition
	case libvirt.ErrXMLError, libvirt.ErrInvalidArg, libvirt.ErrConfigUnsupported, libvirt.ErrXMLDetail:
		kind = fault.Invalid
	case libvirt.ErrDomExist, libvirt.ErrStorageVolExist, libvirt.ErrStoragePoolBuilt:
		kind = fault.AlreadyExists
	case libvirt.ErrOperationTimeout, libvirt.ErrAgentUnresponsive:
		kind = fault.DeadlineExceeded
	}
	return fault.Errorf(kind, "%s: %w", what, err)
}

// Ping fails unless libvirtd answers a cheap call on the read connection.
func (c *Conn) Ping(ctx context.Context) error {
	lv, err := c.Reader(ctx)
	if err != nil {
		return err
	}
	if _, err := lv.ConnectGetLibVersion(); err != nil {
		return Status(err, "libvirtd does not answer")
	}
	return nil
}
