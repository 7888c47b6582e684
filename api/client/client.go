// Package client owns connecting to a DebVisor agent: mTLS over TCP or the
// local unix socket, and helpers every client (dvctl, the Terraform
// provider) needs, such as waiting for an operation.
package client

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// Config says where an agent is and how to prove who we are. Each piece of
// TLS material is a file path or inline PEM; inline PEM wins.
type Config struct {
	// Endpoint is host:port for mTLS, or unix:///path for the local socket.
	Endpoint string
	CAFile   string
	CertFile string
	KeyFile  string
	CAPEM    []byte
	CertPEM  []byte
	KeyPEM   []byte
	// ServerName overrides the name checked against the node certificate
	// (default: the endpoint's host).
	ServerName string
	// Node, when set, asks the agent at Endpoint to forward every call to
	// the cluster member of that name (metadata v1.NodeMetadataKey).
	Node string
}

// IsLocal reports whether the endpoint is the unix socket.
func (c Config) IsLocal() bool { return strings.HasPrefix(c.Endpoint, "unix://") }

// Client is a connection to one agent with a stub per service.
type Client struct {
	conn       *grpc.ClientConn
	Node       v1.NodeServiceClient
	Operations v1.OperationServiceClient
	VMs        v1.VMServiceClient
	Storage    v1.StorageServiceClient
	Cluster    v1.ClusterServiceClient
}

// New connects lazily: errors such as a refused certificate surface on the
// first call, with the agent's explanation.
func New(cfg Config) (*Client, error) {
	if cfg.Endpoint == "" {
		return nil, errors.New("no endpoint: pass --endpoint HOST:PORT, set DEBVISOR_ENDPOINT, or select a dvctl context")
	}
	var (
		opts   []grpc.DialOption
		target string
	)
	if cfg.IsLocal() {
		path := strings.TrimPrefix(cfg.Endpoint, "unix://")
		opts = append(opts,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
				var d net.Dialer
				return d.DialContext(ctx, "unix", path)
			}))
		target = "passthrough:///local"
	} else {
		tc, err := cfg.TLSConfig()
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
		target = "passthrough:///" + cfg.Endpoint
	}
	// Reconnect quickly after the agent restarts (gRPC's default backs off up to two minutes);
	// callers retry their calls, and a node's agent is one hop away.
	opts = append(opts, grpc.WithConnectParams(grpc.ConnectParams{
		Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 5 * time.Second},
		MinConnectTimeout: 5 * time.Second,
	}))
	if cfg.Node != "" {
		opts = append(opts,
			grpc.WithChainUnaryInterceptor(func(ctx context.Context, method string, req, reply any, cc *grpc.ClientConn, invoker grpc.UnaryInvoker, o ...grpc.CallOption) error {
				return invoker(metadata.AppendToOutgoingContext(ctx, v1.NodeMetadataKey, cfg.Node), method, req, reply, cc, o...)
			}),
			grpc.WithChainStreamInterceptor(func(ctx context.Context, desc *grpc.StreamDesc, cc *grpc.ClientConn, method string, streamer grpc.Streamer, o ...grpc.CallOption) (grpc.ClientStream, error) {
				return streamer(metadata.AppendToOutgoingContext(ctx, v1.NodeMetadataKey, cfg.Node), desc, cc, method, o...)
			}))
	}
	conn, err := grpc.NewClient(target, opts...)
	if err != nil {
		return nil, fmt.Errorf("connect %s: %w", cfg.Endpoint, err)
	}
	return &Client{
		conn:       conn,
		Node:       v1.NewNodeServiceClient(conn),
		Operations: v1.NewOperationServiceClient(conn),
		VMs:        v1.NewVMServiceClient(conn),
		Storage:    v1.NewStorageServiceClient(conn),
		Cluster:    v1.NewClusterServiceClient(conn),
	}, nil
}

// Conn exposes the connection for services added after this package.
func (c *Client) Conn() *grpc.ClientConn { return c.conn }

// Close releases the connection.
func (c *Client) Close() error { return c.conn.Close() }

// TLSConfig builds the client side of mTLS from the config.
func (c Config) TLSConfig() (*tls.Config, error) {
	ca, err := pemOrFile(c.CAPEM, c.CAFile, "CA")
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("CA: no PEM certificate found")
	}
	certPEM, err := pemOrFile(c.CertPEM, c.CertFile, "client certificate")
	if err != nil {
		return nil, err
	}
	keyPEM, err := pemOrFile(c.KeyPEM, c.KeyFile, "client key")
	if err != nil {
		return nil, err
	}
	kp, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("client certificate and key: %w", err)
	}
	name := c.ServerName
	if name == "" {
		if h, _, err := net.SplitHostPort(c.Endpoint); err == nil {
			name = h
		} else {
			name = c.Endpoint
		}
	}
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		RootCAs:      pool,
		Certificates: []tls.Certificate{kp},
		ServerName:   name,
	}, nil
}

func pemOrFile(inline []byte, path, what string) ([]byte, error) {
	if len(inline) > 0 {
		return inline, nil
	}
	if path == "" {
		return nil, fmt.Errorf("no %s given: the agent API is mTLS only", what)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", what, err)
	}
	return b, nil
}

// Wait blocks until the operation ends or ctx is done, calling progress (if
// not nil) each time the agent reports a change. A FAILED or CANCELLED
// operation is returned with an error carrying its gRPC code.
func (c *Client) Wait(ctx context.Context, op *v1.Operation, progress func(*v1.Operation)) (*v1.Operation, error) {
	last := ""
	for {
		if progress != nil {
			key := fmt.Sprint(op.GetState(), op.GetPhase(), op.GetDone(), op.GetTotal(), op.GetMessage())
			if key != last {
				progress(op)
				last = key
			}
		}
		switch op.GetState() {
		case v1.Operation_STATE_SUCCEEDED:
			return op, nil
		case v1.Operation_STATE_FAILED, v1.Operation_STATE_CANCELLED:
			return op, status.Error(codes.Code(op.GetErrorCode()), op.GetError())
		}
		// Short server-side waits keep progress flowing.
		next, err := c.Operations.WaitOperation(ctx, &v1.WaitOperationRequest{
			OperationId: op.GetId(), Timeout: durationpb.New(time.Second),
		})
		if err != nil {
			return op, err
		}
		op = next
	}
}
