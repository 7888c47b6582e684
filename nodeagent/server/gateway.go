package server

import (
	"context"
	"net"
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/test/bufconn"
	"google.golang.org/protobuf/encoding/protojson"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// gatewayHandler builds the REST/JSON handler. It authenticates the client
// certificate itself and hands the identity to the in-memory gRPC backend
// in metadata; headers a client sends under those names are dropped.
func (s *Server) gatewayHandler(ctx context.Context, mem *bufconn.Listener) (http.Handler, func(), error) {
	conn, err := grpc.NewClient("passthrough:///gateway",
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) { return mem.DialContext(ctx) }),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
	)
	if err != nil {
		return nil, nil, err
	}
	mux := runtime.NewServeMux(
		runtime.WithIncomingHeaderMatcher(func(key string) (string, bool) {
			if strings.HasPrefix(strings.ToLower(strings.TrimPrefix(strings.ToLower(key), "grpc-metadata-")), "x-debvisor-") {
				return "", false
			}
			// The one custom header passed on: which member to forward to.
			if strings.EqualFold(key, runtime.MetadataHeaderPrefix+v1.NodeMetadataKey) {
				return v1.NodeMetadataKey, true
			}
			return runtime.DefaultHeaderMatcher(key)
		}),
		runtime.WithMetadata(func(ctx context.Context, r *http.Request) metadata.MD {
			id, _ := ctx.Value(identityKey{}).(Identity)
			// The certificate goes along so the call can be forwarded to
			// another member (forward.go), which checks it itself.
			return metadata.Pairs(mdIdentity, id.Name, mdRole, id.Role.String(), mdCert, string(id.cert))
		}),
		runtime.WithMarshalerOption(runtime.MIMEWildcard, &runtime.JSONPb{
			MarshalOptions:   protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: false},
			UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
		}),
	)
	for _, svc := range s.services {
		if err := svc.RegisterGateway(ctx, mux, conn); err != nil {
			conn.Close()
			return nil, nil, err
		}
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil {
			http.Error(w, "TLS required", http.StatusBadRequest)
			return
		}
		id, err := s.identityFromCerts(r.TLS.PeerCertificates)
		if err != nil {
			st, _ := status.FromError(err)
			runtime.HTTPError(r.Context(), mux, &runtime.JSONPb{}, w, r, st.Err())
			return
		}
		mux.ServeHTTP(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, id)))
	})
	return h, func() { conn.Close() }, nil
}
