// Package libvirtconn owns the agent's connection to libvirtd: dialing its
// RPC socket, reconnecting after libvirtd restarts, dedicated connections
// for long-lived streams (consoles), and turning libvirt errors into gRPC
// statuses.
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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// DefaultSocket is libvirtd's read-write socket for qemu:///system.
const DefaultSocket = "/var/run/libvirt/libvirt-sock"

// Config says where libvirtd is.
type Config struct {
	// Socket is the path of libvirtd's unix socket.
	Socket string
	// URI is the driver to open; qemu:///system when empty.
	URI string
	// DialTimeout bounds each connection attempt (5 s when 0).
	DialTimeout time.Duration
}

// Conn is a shared, self-healing connection to libvirtd. It is safe for
// concurrent use: go-libvirt multiplexes calls over one socket.
type Conn struct {
	cfg Config
	log *slog.Logger

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
		cfg.DialTimeout = 5 * time.Second
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Conn{cfg: cfg, log: log}
}

// Client returns a connected client, reconnecting when the previous
// connection was lost.
func (c *Conn) Client(ctx context.Context) (*libvirt.Libvirt, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lv != nil && c.lv.IsConnected() {
		return c.lv, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	lv, err := c.dial()
	if err != nil {
		return nil, err
	}
	if c.lv != nil {
		c.log.Info("reconnected to libvirtd", "socket", c.cfg.Socket)
	}
	c.lv = lv
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
		return nil, status.Errorf(codes.FailedPrecondition, "libvirt not available: connect %s via %s: %v", c.cfg.URI, c.cfg.Socket, err)
	}
	return lv, nil
}

// Close disconnects.
func (c *Conn) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.lv == nil || !c.lv.IsConnected() {
		return nil
	}
	err := c.lv.Disconnect()
	c.lv = nil
	return err
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

// Status turns err into a gRPC status with what was being done in front;
// errors that already are statuses keep their code.
func Status(err error, format string, args ...any) error {
	if err == nil {
		return nil
	}
	what := fmt.Sprintf(format, args...)
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		return status.Errorf(st.Code(), "%s: %s", what, st.Message())
	}
	code := codes.Internal
	switch Code(err) {
	case libvirt.ErrNoDomain, libvirt.ErrNoStoragePool, libvirt.ErrNoStorageVol:
		code = codes.NotFound
	case libvirt.ErrOperationInvalid, libvirt.ErrOperationFailed:
		code = codes.FailedPrecondition
	case libvirt.ErrXMLError, libvirt.ErrInvalidArg, libvirt.ErrConfigUnsupported, libvirt.ErrXMLDetail:
		code = codes.InvalidArgument
	case libvirt.ErrDomExist, libvirt.ErrStorageVolExist, libvirt.ErrStoragePoolBuilt:
		code = codes.AlreadyExists
	case libvirt.ErrOperationTimeout, libvirt.ErrAgentUnresponsive:
		code = codes.DeadlineExceeded
	}
	if errors.Is(err, context.Canceled) {
		code = codes.Canceled
	}
	return status.Errorf(code, "%s: %v", what, err)
}
