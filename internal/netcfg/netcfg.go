// Package netcfg owns the console network configuration screen: a keyboard
// TUI that lists the node's links and builds a NetworkConfig from them
// (bonds, VLANs, DHCP or static addressing), shows the validated plan, and
// applies it confirm-or-revert with a visible countdown.
//
// It knows only the API: every read and change goes through a Service,
// which is the NetworkService gRPC client (dvctl netcfg, or the agent's
// local socket) or the agent's own handlers called in process (the node's
// console when no agent is serving). Validation, planning, persistence and
// the revert deadline are therefore the API's, never this package's.
package netcfg

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"google.golang.org/grpc/status"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// Service is the part of NetworkService the screen uses. A
// v1.NetworkServiceServer satisfies it as it is; FromClient adapts the
// gRPC client.
type Service interface {
	GetNetwork(context.Context, *v1.GetNetworkRequest) (*v1.NetworkState, error)
	ApplyNetwork(context.Context, *v1.ApplyNetworkRequest) (*v1.ApplyNetworkResponse, error)
	ConfirmNetwork(context.Context, *v1.ConfirmNetworkRequest) (*v1.NetworkChange, error)
	RevertNetwork(context.Context, *v1.RevertNetworkRequest) (*v1.NetworkChange, error)
}

var _ Service = v1.NetworkServiceServer(nil)

// FromClient makes a Service of the gRPC client.
func FromClient(c v1.NetworkServiceClient) Service { return client{c} }

type client struct{ c v1.NetworkServiceClient }

func (c client) GetNetwork(ctx context.Context, r *v1.GetNetworkRequest) (*v1.NetworkState, error) {
	return c.c.GetNetwork(ctx, r)
}

func (c client) ApplyNetwork(ctx context.Context, r *v1.ApplyNetworkRequest) (*v1.ApplyNetworkResponse, error) {
	return c.c.ApplyNetwork(ctx, r)
}

func (c client) ConfirmNetwork(ctx context.Context, r *v1.ConfirmNetworkRequest) (*v1.NetworkChange, error) {
	return c.c.ConfirmNetwork(ctx, r)
}

func (c client) RevertNetwork(ctx context.Context, r *v1.RevertNetworkRequest) (*v1.NetworkChange, error) {
	return c.c.RevertNetwork(ctx, r)
}

// Options configure the screen.
type Options struct {
	Service Service
	// Source names what the screen talks to, for its title bar ("local
	// agent", "node-1:7443").
	Source string
	// ConfirmTimeout is the confirm deadline asked for; 0 uses the node's
	// default.
	ConfirmTimeout time.Duration
	// CallTimeout bounds each call (10 s when 0).
	CallTimeout time.Duration
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// Run shows the screen on in/out until the user quits or ctx ends.
func Run(ctx context.Context, o Options, in io.Reader, out io.Writer) error {
	if o.Service == nil {
		return errors.New("netcfg: no network service")
	}
	p := tea.NewProgram(newModel(ctx, o), tea.WithContext(ctx), tea.WithInput(in), tea.WithOutput(out), tea.WithAltScreen())
	_, err := p.Run()
	if errors.Is(err, tea.ErrProgramKilled) && ctx.Err() != nil {
		return nil
	}
	if err != nil {
		return fmt.Errorf("netcfg: %w", err)
	}
	return nil
}

// errText is an error as the user should read it: the API's message
// without the gRPC code prefix.
func errText(err error) string {
	if s, ok := status.FromError(err); ok {
		return s.Message()
	}
	return err.Error()
}
