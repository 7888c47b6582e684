package server

import (
	"context"
	"crypto/sha256"
	"crypto/x509"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/internal/pki"
)

// methodRoles is THE table of who may call what: the minimum role for every
// RPC the agent serves. A method missing here is refused for everyone, and
// TestEveryMethodHasARole fails, so a new RPC cannot ship unclassified.
var methodRoles = map[string]pki.Role{
	v1.NodeService_GetNode_FullMethodName:     pki.RoleReader,
	v1.NodeService_CheckHealth_FullMethodName: pki.RoleOperator,

	v1.OperationService_ListOperations_FullMethodName:  pki.RoleReader,
	v1.OperationService_GetOperation_FullMethodName:    pki.RoleReader,
	v1.OperationService_WaitOperation_FullMethodName:   pki.RoleReader,
	v1.OperationService_CancelOperation_FullMethodName: pki.RoleOperator,

	v1.StorageService_CreatePool_FullMethodName:   pki.RoleOperator,
	v1.StorageService_GetPool_FullMethodName:      pki.RoleReader,
	v1.StorageService_ListPools_FullMethodName:    pki.RoleReader,
	v1.StorageService_DeletePool_FullMethodName:   pki.RoleAdmin,
	v1.StorageService_CreateVolume_FullMethodName: pki.RoleOperator,
	v1.StorageService_GetVolume_FullMethodName:    pki.RoleReader,
	v1.StorageService_ListVolumes_FullMethodName:  pki.RoleReader,
	v1.StorageService_ResizeVolume_FullMethodName: pki.RoleOperator,
	v1.StorageService_CloneVolume_FullMethodName:  pki.RoleOperator,
	v1.StorageService_DeleteVolume_FullMethodName: pki.RoleOperator,
	v1.StorageService_UploadVolume_FullMethodName: pki.RoleOperator,

	v1.VMService_CreateVM_FullMethodName:       pki.RoleOperator,
	v1.VMService_GetVM_FullMethodName:          pki.RoleReader,
	v1.VMService_ListVMs_FullMethodName:        pki.RoleReader,
	v1.VMService_UpdateVM_FullMethodName:       pki.RoleOperator,
	v1.VMService_StartVM_FullMethodName:        pki.RoleOperator,
	v1.VMService_StopVM_FullMethodName:         pki.RoleOperator,
	v1.VMService_RebootVM_FullMethodName:       pki.RoleOperator,
	v1.VMService_DeleteVM_FullMethodName:       pki.RoleOperator,
	v1.VMService_StreamConsole_FullMethodName:  pki.RoleOperator,
	v1.VMService_GetVMAddresses_FullMethodName: pki.RoleReader,

	v1.ClusterService_GetCluster_FullMethodName:      pki.RoleReader,
	v1.ClusterService_ListMembers_FullMethodName:     pki.RoleReader,
	v1.ClusterService_CreateJoinToken_FullMethodName: pki.RoleAdmin,
	v1.ClusterService_ListJoinTokens_FullMethodName:  pki.RoleAdmin,
	v1.ClusterService_DeleteJoinToken_FullMethodName: pki.RoleAdmin,
	// RoleNone: public. A node that is joining has no certificate yet; the
	// join token in the request authenticates it (checked by the handler),
	// and TestPublicMethods pins this to the one method.
	v1.ClusterService_Join_FullMethodName: pki.RoleNone,

	v1.UpgradeService_Upgrade_FullMethodName:  pki.RoleAdmin,
	v1.UpgradeService_GetSlots_FullMethodName: pki.RoleReader,
	v1.UpgradeService_Rollback_FullMethodName: pki.RoleAdmin,
	v1.UpgradeService_Commit_FullMethodName:   pki.RoleAdmin,

	// Host networking can cut the node off: changing it is the admin's.
	v1.NetworkService_GetNetwork_FullMethodName:     pki.RoleReader,
	v1.NetworkService_ApplyNetwork_FullMethodName:   pki.RoleAdmin,
	v1.NetworkService_ConfirmNetwork_FullMethodName: pki.RoleAdmin,
	v1.NetworkService_RevertNetwork_FullMethodName:  pki.RoleAdmin,

	healthpb.Health_Check_FullMethodName: pki.RoleReader,
	healthpb.Health_Watch_FullMethodName: pki.RoleReader,
	healthpb.Health_List_FullMethodName:  pki.RoleReader,
}

// MinimumRole returns the role an RPC requires and whether it is classified.
func MinimumRole(fullMethod string) (pki.Role, bool) {
	r, ok := methodRoles[fullMethod]
	return r, ok
}

// Identity is the authenticated caller of an RPC.
type Identity struct {
	// Name is the certificate's common name, or "local:uid=N" on the socket.
	Name string
	Role pki.Role
	// Via names the member that forwarded the call ("" when direct).
	Via string
	// cert is the caller's client certificate (DER), which a forwarded
	// call carries to the target; nil on the local socket.
	cert []byte
}

type identityKey struct{}

// IdentityFrom returns the caller the interceptors authenticated.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// authMode says how a listener's callers prove who they are.
type authMode int

const (
	// authTLS: the client certificate, verified against the cluster CAs.
	authTLS authMode = iota
	// authLocal: kernel peer credentials on the root-only unix socket.
	authLocal
	// authGateway: the in-process REST gateway, which verified the client
	// certificate itself and passes the identity in metadata. Only the
	// in-memory listener uses this mode.
	authGateway
)

const (
	mdIdentity = "x-debvisor-identity"
	mdRole     = "x-debvisor-role"
	mdCert     = "x-debvisor-cert-bin"
)

func (s *Server) authenticate(ctx context.Context, mode authMode) (Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, status.Error(codes.Unauthenticated, "no peer information")
	}
	switch mode {
	case authTLS:
		info, ok := p.AuthInfo.(credentials.TLSInfo)
		if !ok {
			return Identity{}, status.Error(codes.Unauthenticated, "connection is not TLS: the API is mTLS only")
		}
		id, err := s.identityFromCerts(info.State.PeerCertificates)
		if err != nil {
			return id, err
		}
		return s.forwardedIdentity(ctx, id, info.State.PeerCertificates[0])
	case authLocal:
		info, ok := p.AuthInfo.(peerCredInfo)
		if !ok {
			return Identity{}, status.Error(codes.Unauthenticated, "no peer credentials on the local socket")
		}
		// The socket is root-only; the check repeats it in case the file
		// mode was loosened by hand.
		if info.UID != 0 && info.UID != uint32(s.uid) {
			return Identity{}, status.Errorf(codes.PermissionDenied, "local socket: uid %d is neither root nor the agent's user", info.UID)
		}
		return Identity{Name: fmt.Sprintf("local:uid=%d", info.UID), Role: pki.RoleAdmin}, nil
	case authGateway:
		md, _ := metadata.FromIncomingContext(ctx)
		names, roles := md.Get(mdIdentity), md.Get(mdRole)
		if len(names) != 1 || len(roles) != 1 {
			return Identity{}, status.Error(codes.Unauthenticated, "gateway did not pass an identity")
		}
		r, err := pki.ParseRole(roles[0])
		if err != nil {
			return Identity{}, status.Error(codes.Unauthenticated, err.Error())
		}
		id := Identity{Name: names[0], Role: r}
		if c := md.Get(mdCert); len(c) == 1 {
			id.cert = []byte(c[0])
		}
		return id, nil
	}
	return Identity{}, status.Error(codes.Internal, "unknown auth mode")
}

// identityFromCerts verifies a client chain and returns who it names. Errors
// are Unauthenticated with a reason the certificate holder can act on.
func (s *Server) identityFromCerts(chain []*x509.Certificate) (Identity, error) {
	if len(chain) == 0 {
		return Identity{}, status.Error(codes.Unauthenticated, "no client certificate presented: the DebVisor API requires mTLS (dvctl: set --cert/--key or a context)")
	}
	now := s.now()
	roots := s.pki.Roots()
	key := sha256.Sum256(chain[0].Raw)
	if id, ok := s.verified.get(key, roots, now); ok {
		return id, nil
	}
	if err := pki.Verify(chain[0], chain[1:], roots, now); err != nil {
		return Identity{}, status.Error(codes.Unauthenticated, err.Error())
	}
	id := Identity{Name: chain[0].Subject.CommonName, Role: pki.RoleOf(chain[0]), cert: chain[0].Raw}
	s.verified.put(key, roots, chain[0].NotAfter, id)
	return id, nil
}

// verifyCache remembers certificates that verified against a given CA pool,
// so that chain verification (signature checks) runs once per client
// certificate rather than once per RPC. An entry is used only with the same
// pool (a CA rotation reloads the pool and so invalidates everything) and
// before the certificate's NotAfter.
type verifyCache struct {
	mu      sync.Mutex
	entries map[[32]byte]verifiedEntry
}

type verifiedEntry struct {
	roots    *x509.CertPool
	notAfter time.Time
	id       Identity
}

func (c *verifyCache) get(key [32]byte, roots *x509.CertPool, now time.Time) (Identity, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok || e.roots != roots || !now.Before(e.notAfter) {
		return Identity{}, false
	}
	return e.id, true
}

func (c *verifyCache) put(key [32]byte, roots *x509.CertPool, notAfter time.Time, id Identity) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.entries == nil || len(c.entries) > 10000 {
		c.entries = map[[32]byte]verifiedEntry{}
	}
	c.entries[key] = verifiedEntry{roots: roots, notAfter: notAfter, id: id}
}

func authorize(id Identity, method string) error {
	need, ok := methodRoles[method]
	if !ok {
		return status.Errorf(codes.PermissionDenied, "%s is not in the agent's role table; refusing", method)
	}
	if id.Role < need {
		return status.Errorf(codes.PermissionDenied, "%s requires role %s; %q has role %s", shortMethod(method), need, id.Name, id.Role)
	}
	return nil
}

func shortMethod(m string) string {
	if i := strings.LastIndex(m, "."); i >= 0 {
		return m[i+1:]
	}
	return m
}

// public reports whether a method needs no authenticated caller (Join).
func public(method string) bool {
	r, ok := methodRoles[method]
	return ok && r == pki.RoleNone
}

func (s *Server) unaryAuth(mode authMode) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if public(info.FullMethod) {
			return h(ctx, req)
		}
		id, err := s.authenticate(ctx, mode)
		if err != nil {
			return nil, err
		}
		if err := authorize(id, info.FullMethod); err != nil {
			return nil, err
		}
		return h(context.WithValue(ctx, identityKey{}, id), req)
	}
}

type wrappedStream struct {
	grpc.ServerStream
	ctx context.Context
}

func (w wrappedStream) Context() context.Context { return w.ctx }

func (s *Server) streamAuth(mode authMode) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if public(info.FullMethod) {
			return h(srv, ss)
		}
		id, err := s.authenticate(ss.Context(), mode)
		if err != nil {
			return err
		}
		if err := authorize(id, info.FullMethod); err != nil {
			return err
		}
		return h(srv, wrappedStream{ss, context.WithValue(ss.Context(), identityKey{}, id)})
	}
}

// requestedBy names the caller for operation records.
func requestedBy(ctx context.Context) string {
	if id, ok := IdentityFrom(ctx); ok {
		if id.Via != "" {
			return id.Name + " (via " + id.Via + ")"
		}
		return id.Name
	}
	return ""
}
