package server

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/internal/pki"
)

// Forwarding, as Talos's apid does it: a call carrying the metadata key
// v1.NodeMetadataKey ("debvisor-node") naming another member is sent on to
// that member, so a client needs one endpoint.
//
// The caller's rights must not grow on the way. The receiving node has
// authenticated and authorized the caller like any call; it then calls the
// target over mTLS as itself (its node certificate) and passes the
// caller's own client certificate in mdForwardedCert. The target accepts
// that only from a peer holding a node certificate, verifies the forwarded
// certificate itself (chain, expiry with its own clock) and takes the role
// from it, never from anything the forwarding node asserts. So a node can
// only ever act as a client whose certificate it was shown, with that
// certificate's role; a client cannot smuggle a forwarded identity (it has
// no node certificate); and callers without a certificate (the local
// socket, the public Join) are not forwarded at all.
const (
	mdForwardedCert = "x-debvisor-forwarded-cert-bin"
	mdForwardedBy   = "x-debvisor-forwarded-by"
)

// Router resolves member names for forwarding; nodeagent/cluster provides it.
type Router interface {
	// Self is this node's member name.
	Self() string
	// Lookup returns the member's API address, or a fault (NotFound for a
	// name that is not a member).
	Lookup(name string) (string, error)
}

// forwardTarget returns the member a call asks for, "" for this node.
func (s *Server) forwardTarget(ctx context.Context) (string, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get(v1.NodeMetadataKey)
	switch {
	case len(vals) == 0 || vals[0] == "":
		return "", nil
	case len(vals) > 1:
		return "", status.Errorf(codes.InvalidArgument, "%s: one node per call, got %d", v1.NodeMetadataKey, len(vals))
	}
	if s.router == nil {
		return "", status.Errorf(codes.FailedPrecondition, "%s: this node is not in a cluster and cannot forward to %q", v1.NodeMetadataKey, vals[0])
	}
	if vals[0] == s.router.Self() {
		return "", nil
	}
	return vals[0], nil
}

// forwardedIdentity is the target side: a call from another member that
// carries a forwarded client certificate is the client's call.
func (s *Server) forwardedIdentity(ctx context.Context, peerID Identity, peer *x509.Certificate) (Identity, error) {
	md, _ := metadata.FromIncomingContext(ctx)
	fwd := md.Get(mdForwardedCert)
	if len(fwd) == 0 {
		return peerID, nil
	}
	if !pki.IsNode(peer) {
		return Identity{}, status.Errorf(codes.PermissionDenied, "%q sent a forwarded identity, but only cluster members (node certificates) may forward calls", peerID.Name)
	}
	if len(fwd) != 1 {
		return Identity{}, status.Error(codes.Unauthenticated, "forwarded call with more than one client certificate")
	}
	cert, err := x509.ParseCertificate([]byte(fwd[0]))
	if err != nil {
		return Identity{}, status.Errorf(codes.Unauthenticated, "forwarded client certificate: %v", err)
	}
	id, err := s.identityFromCerts([]*x509.Certificate{cert})
	if err != nil {
		return Identity{}, err
	}
	id.Via = peerID.Name
	return id, nil
}

// forwarder keeps one connection per target member.
type forwarder struct {
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (s *Server) forwardConn(target string) (*grpc.ClientConn, error) {
	addr, err := s.router.Lookup(target)
	if err != nil {
		return nil, err
	}
	key := target + "@" + addr
	s.fwd.mu.Lock()
	defer s.fwd.mu.Unlock()
	if c, ok := s.fwd.conns[key]; ok {
		return c, nil
	}
	tc := &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verified below against the current CA bundle (it can rotate while
		// the connection is cached) and the member's name.
		InsecureSkipVerify: true, //nolint:gosec // VerifyConnection checks chain and name
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no server certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			leaf := cs.PeerCertificates[0]
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: s.pki.Roots(), Intermediates: inter, DNSName: target, CurrentTime: s.now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("member %s at %s: %w", target, addr, err)
			}
			if !pki.IsNode(leaf) {
				return fmt.Errorf("member %s at %s does not present a node certificate", target, addr)
			}
			return nil
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			s.pki.mu.Lock()
			defer s.pki.mu.Unlock()
			return s.pki.cert, nil
		},
	}
	c, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	if err != nil {
		return nil, status.Errorf(codes.Internal, "forward to %s: %v", target, err)
	}
	if s.fwd.conns == nil {
		s.fwd.conns = map[string]*grpc.ClientConn{}
	}
	s.fwd.conns[key] = c
	return c, nil
}

func (f *forwarder) close() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for k, c := range f.conns {
		_ = c.Close()
		delete(f.conns, k)
	}
}

// outgoing builds the forwarded call's metadata: the caller's own metadata
// minus routing and identity keys (which only this node may set), plus the
// caller's certificate.
func (s *Server) outgoing(ctx context.Context, id Identity) (context.Context, error) {
	if len(id.cert) == 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "%s: calls without a client certificate (the local socket, Join) are not forwarded; call with a certificate over TLS (dvctl --ca/--cert/--key or a context)", v1.NodeMetadataKey)
	}
	in, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range in {
		switch {
		case strings.HasPrefix(k, ":"), strings.HasPrefix(k, "grpc-"), strings.HasPrefix(k, "x-debvisor-"),
			k == v1.NodeMetadataKey, k == "content-type", k == "user-agent", k == "te", k == "authority":
			continue
		}
		out[k] = append([]string(nil), v...)
	}
	out.Set(mdForwardedCert, string(id.cert))
	out.Set(mdForwardedBy, s.router.Self())
	return metadata.NewOutgoingContext(ctx, out), nil
}

// unaryForward sends the call to the member it names, if any.
func (s *Server) unaryForward(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	target, err := s.forwardTarget(ctx)
	if err != nil || target == "" {
		if err != nil {
			return nil, err
		}
		return h(ctx, req)
	}
	id, _ := IdentityFrom(ctx)
	octx, err := s.outgoing(ctx, id)
	if err != nil {
		return nil, err
	}
	_, out, err := messageTypes(info.FullMethod)
	if err != nil {
		return nil, err
	}
	conn, err := s.forwardConn(target)
	if err != nil {
		return nil, err
	}
	resp := out.New().Interface()
	var hdr, trl metadata.MD
	err = conn.Invoke(octx, info.FullMethod, req, resp, grpc.Header(&hdr), grpc.Trailer(&trl))
	_ = grpc.SetHeader(ctx, hdr)
	_ = grpc.SetTrailer(ctx, trl)
	if err != nil {
		return nil, fromMember(target, err)
	}
	s.log.Debug("call forwarded", "method", info.FullMethod, "caller", id.Name, "to", target)
	return resp, nil
}

// streamForward relays a streaming call message by message.
func (s *Server) streamForward(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	target, err := s.forwardTarget(ss.Context())
	if err != nil || target == "" {
		if err != nil {
			return err
		}
		return h(srv, ss)
	}
	id, _ := IdentityFrom(ss.Context())
	octx, err := s.outgoing(ss.Context(), id)
	if err != nil {
		return err
	}
	in, out, err := messageTypes(info.FullMethod)
	if err != nil {
		return err
	}
	conn, err := s.forwardConn(target)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(octx)
	defer cancel()
	cs, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: info.IsServerStream, ClientStreams: info.IsClientStream}, info.FullMethod)
	if err != nil {
		return fromMember(target, err)
	}
	// Caller → member. A send error shows up on the receiving side below.
	go func() {
		for {
			m := in.New().Interface()
			if err := ss.RecvMsg(m); err != nil {
				if errors.Is(err, io.EOF) {
					_ = cs.CloseSend()
				} else {
					cancel()
				}
				return
			}
			if err := cs.SendMsg(m); err != nil {
				return
			}
		}
	}()
	// Member → caller.
	for first := true; ; first = false {
		m := out.New().Interface()
		if err := cs.RecvMsg(m); err != nil {
			ss.SetTrailer(cs.Trailer())
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fromMember(target, err)
		}
		if first {
			if hdr, err := cs.Header(); err == nil {
				_ = ss.SendHeader(hdr)
			}
		}
		if err := ss.SendMsg(m); err != nil {
			return err
		}
		if !info.IsServerStream {
			// One response ends a client stream; RecvMsg has consumed the status.
			ss.SetTrailer(cs.Trailer())
			return nil
		}
	}
}

// messageTypes finds a method's request and response types in the
// registry every generated API package registers into.
func messageTypes(fullMethod string) (in, out protoreflect.MessageType, err error) {
	svc, method, ok := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	if ok {
		if d, derr := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(svc)); derr == nil {
			if sd, isSvc := d.(protoreflect.ServiceDescriptor); isSvc {
				if md := sd.Methods().ByName(protoreflect.Name(method)); md != nil {
					in, ierr := protoregistry.GlobalTypes.FindMessageByName(md.Input().FullName())
					out, oerr := protoregistry.GlobalTypes.FindMessageByName(md.Output().FullName())
					if ierr == nil && oerr == nil {
						return in, out, nil
					}
				}
			}
		}
	}
	return nil, nil, status.Errorf(codes.Unimplemented, "%s cannot be forwarded: its message types are not known", fullMethod)
}

// fromMember names the member in an error it returned, keeping the code.
func fromMember(target string, err error) error {
	sp := status.Convert(err).Proto() // a copy
	sp.Message = "node " + target + ": " + sp.GetMessage()
	return status.FromProto(sp).Err()
}
