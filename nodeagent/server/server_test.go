package server

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/dynamicpb"
	"google.golang.org/protobuf/types/known/durationpb"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/internal/pki"
)

func TestAuthentication(t *testing.T) {
	a := startAgent(t)
	tests := []struct {
		who      string
		call     string // "read" or "mutate"
		wantCode codes.Code
		wantMsg  string
	}{
		{who: "", call: "read", wantCode: codes.Unauthenticated, wantMsg: "no client certificate"},
		{who: "foreign", call: "read", wantCode: codes.Unauthenticated, wantMsg: "not issued by this cluster's CA"},
		{who: "expired", call: "read", wantCode: codes.Unauthenticated, wantMsg: "expired at"},
		{who: "node", call: "read", wantCode: codes.PermissionDenied, wantMsg: "has role none"},
		{who: "reader", call: "read", wantCode: codes.OK},
		{who: "reader", call: "mutate", wantCode: codes.PermissionDenied, wantMsg: "CheckHealth requires role operator"},
		{who: "operator", call: "mutate", wantCode: codes.OK},
		{who: "admin", call: "read", wantCode: codes.OK},
		{who: "admin", call: "mutate", wantCode: codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.who+"/"+tt.call, func(t *testing.T) {
			conn := a.dial(t, tt.who)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			var err error
			if tt.call == "read" {
				var n *v1.Node
				n, err = v1.NewNodeServiceClient(conn).GetNode(ctx, &v1.GetNodeRequest{})
				if err == nil && n.GetName() != "node1" {
					t.Errorf("GetNode name = %q, want node1", n.GetName())
				}
			} else {
				var op *v1.Operation
				op, err = v1.NewNodeServiceClient(conn).CheckHealth(ctx, &v1.CheckHealthRequest{})
				if err == nil && !strings.HasPrefix(op.GetId(), "op-") {
					t.Errorf("CheckHealth returned no operation id: %v", op)
				}
			}
			if got := status.Code(err); got != tt.wantCode {
				t.Fatalf("code = %v (%v), want %v", got, err, tt.wantCode)
			}
			if tt.wantMsg != "" && !strings.Contains(status.Convert(err).Message(), tt.wantMsg) {
				t.Errorf("message %q does not contain %q", status.Convert(err).Message(), tt.wantMsg)
			}
		})
	}
}

// TestEveryMethodHasARole fails when a service gains an RPC that is not in
// the role table (it would be refused for everyone).
func TestEveryMethodHasARole(t *testing.T) {
	a := startAgent(t)
	g := a.srv.grpcs[0]
	n := 0
	for svc, info := range g.GetServiceInfo() {
		for _, m := range info.Methods {
			full := "/" + svc + "/" + m.Name
			if _, ok := MinimumRole(full); !ok {
				t.Errorf("%s has no entry in methodRoles", full)
			}
			n++
		}
	}
	if n < len(methodRoles) {
		t.Errorf("served %d methods but the role table has %d: stale entries?", n, len(methodRoles))
	}
}

// TestRoleTable calls every RPC in the table with every role and checks that
// exactly the roles at or above the minimum get past authorization.
func TestRoleTable(t *testing.T) {
	a := startAgent(t)
	for method, need := range methodRoles {
		md := methodDescriptor(t, method)
		for _, r := range []pki.Role{pki.RoleReader, pki.RoleOperator, pki.RoleAdmin} {
			t.Run(shortMethod(method)+"/"+r.String(), func(t *testing.T) {
				err := invokeEmpty(t, a.dial(t, r.String()), method, md)
				denied := status.Code(err) == codes.PermissionDenied || status.Code(err) == codes.Unauthenticated
				if r < need && !denied {
					t.Errorf("role %s called %s (needs %s): got %v, want PermissionDenied", r, method, need, err)
				}
				if r >= need && denied {
					t.Errorf("role %s refused on %s (needs %s): %v", r, method, need, err)
				}
			})
		}
	}
}

func methodDescriptor(t *testing.T, full string) protoreflect.MethodDescriptor {
	t.Helper()
	parts := strings.Split(strings.TrimPrefix(full, "/"), "/")
	d, err := protoregistry.GlobalFiles.FindDescriptorByName(protoreflect.FullName(parts[0]))
	if err != nil {
		t.Fatalf("%s: %v", full, err)
	}
	m := d.(protoreflect.ServiceDescriptor).Methods().ByName(protoreflect.Name(parts[1]))
	if m == nil {
		t.Fatalf("%s: no such method", full)
	}
	return m
}

// invokeEmpty calls a method with an empty request of the right type.
func invokeEmpty(t *testing.T, conn *grpc.ClientConn, method string, md protoreflect.MethodDescriptor) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req := dynamicpb.NewMessage(md.Input())
	resp := dynamicpb.NewMessage(md.Output())
	if !md.IsStreamingServer() && !md.IsStreamingClient() {
		return conn.Invoke(ctx, method, req, resp)
	}
	s, err := conn.NewStream(ctx, &grpc.StreamDesc{ServerStreams: md.IsStreamingServer(), ClientStreams: md.IsStreamingClient()}, method)
	if err != nil {
		return err
	}
	if err := s.SendMsg(req); err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if err := s.CloseSend(); err != nil {
		return err
	}
	return s.RecvMsg(resp)
}

func TestMalformedRequests(t *testing.T) {
	a := startAgent(t)
	conn := a.dial(t, "admin")
	ops := v1.NewOperationServiceClient(conn)
	node := v1.NewNodeServiceClient(conn)
	ctx := context.Background()
	tests := []struct {
		name  string
		call  func() error
		field string
	}{
		{"get empty id", func() error { _, err := ops.GetOperation(ctx, &v1.GetOperationRequest{}); return err }, "operation_id: must not be empty"},
		{"get bad id", func() error {
			_, err := ops.GetOperation(ctx, &v1.GetOperationRequest{OperationId: "../etc"})
			return err
		}, "operation_id: \"../etc\" is not an operation id"},
		{"cancel empty id", func() error { _, err := ops.CancelOperation(ctx, &v1.CancelOperationRequest{}); return err }, "operation_id"},
		{"negative page size", func() error {
			_, err := ops.ListOperations(ctx, &v1.ListOperationsRequest{PageSize: -1})
			return err
		}, "page_size: must not be negative"},
		{"huge page size", func() error {
			_, err := ops.ListOperations(ctx, &v1.ListOperationsRequest{PageSize: 1 << 30})
			return err
		}, "page_size: must be at most"},
		{"bad page token", func() error {
			_, err := ops.ListOperations(ctx, &v1.ListOperationsRequest{PageToken: "x"})
			return err
		}, "page_token"},
		{"bad state", func() error {
			_, err := ops.ListOperations(ctx, &v1.ListOperationsRequest{States: []v1.Operation_State{42}})
			return err
		}, "states[0]"},
		{"negative wait", func() error {
			_, err := ops.WaitOperation(ctx, &v1.WaitOperationRequest{OperationId: "op-00", Timeout: durationpb.New(-time.Second)})
			return err
		}, "timeout: must not be negative"},
		{"unknown check", func() error {
			_, err := node.CheckHealth(ctx, &v1.CheckHealthRequest{Checks: []string{"state-dir-writable", "nope"}})
			return err
		}, "checks[1]: unknown health check \"nope\""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.call()
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("code = %v (%v), want InvalidArgument", status.Code(err), err)
			}
			if !strings.Contains(status.Convert(err).Message(), tt.field) {
				t.Errorf("message %q does not name %q", status.Convert(err).Message(), tt.field)
			}
		})
	}
	if _, err := ops.GetOperation(ctx, &v1.GetOperationRequest{OperationId: "op-0000000000000000"}); status.Code(err) != codes.NotFound {
		t.Errorf("unknown operation: got %v, want NotFound", err)
	}
	// Nothing was started by the refused calls.
	if l, err := ops.ListOperations(ctx, &v1.ListOperationsRequest{}); err != nil || len(l.GetOperations()) != 0 {
		t.Errorf("refused requests left operations behind: %v %v", l, err)
	}
}

func TestOperationLifecycle(t *testing.T) {
	a := startAgent(t)
	conn := a.dial(t, "operator")
	ctx := context.Background()
	op, err := v1.NewNodeServiceClient(conn).CheckHealth(ctx, &v1.CheckHealthRequest{Checks: []string{"state-dir-writable", "node-certificate"}})
	must(t, err)
	if got := op.GetPhases(); len(got) != 2 || got[0] != "state-dir-writable" {
		t.Errorf("phases = %v", got)
	}
	if op.GetRequestedBy() != "operator-user" {
		t.Errorf("requested_by = %q, want the certificate CN", op.GetRequestedBy())
	}
	ops := v1.NewOperationServiceClient(conn)
	done, err := ops.WaitOperation(ctx, &v1.WaitOperationRequest{OperationId: op.GetId(), Timeout: durationpb.New(10 * time.Second)})
	must(t, err)
	if done.GetState() != v1.Operation_STATE_SUCCEEDED || done.GetDone() != 2 || done.GetTotal() != 2 {
		t.Fatalf("operation ended %v %d/%d: %v", done.GetState(), done.GetDone(), done.GetTotal(), done.GetError())
	}
	if done.GetResult()["status"] != "STATUS_HEALTHY" {
		t.Errorf("result = %v", done.GetResult())
	}
	list, err := ops.ListOperations(ctx, &v1.ListOperationsRequest{Kind: "node.check-health"})
	must(t, err)
	if len(list.GetOperations()) != 1 || list.GetOperations()[0].GetId() != op.GetId() {
		t.Errorf("list = %v", list)
	}
	// Cancelling a finished operation changes nothing.
	c, err := ops.CancelOperation(ctx, &v1.CancelOperationRequest{OperationId: op.GetId()})
	must(t, err)
	if c.GetState() != v1.Operation_STATE_SUCCEEDED {
		t.Errorf("cancel of a finished op changed it to %v", c.GetState())
	}
	n, err := v1.NewNodeServiceClient(conn).GetNode(ctx, &v1.GetNodeRequest{})
	must(t, err)
	var names []string
	for _, c := range n.GetHealth().GetChecks() {
		names = append(names, c.GetName())
	}
	if n.GetHealth().GetStatus() != v1.HealthSummary_STATUS_HEALTHY || strings.Join(names, ",") != "state-dir-writable,state-dir-free-space,node-certificate,api-serving" {
		t.Errorf("health summary = %v", n.GetHealth())
	}
}

// restClient returns an HTTPS client presenting who's certificate.
func restClient(t *testing.T, a *testAgent, who string) *http.Client {
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: a.pki.tlsConfig(t, who)}}
}

func TestRESTMatchesGRPC(t *testing.T) {
	a := startAgent(t)
	g, err := v1.NewNodeServiceClient(a.dial(t, "reader")).GetNode(context.Background(), &v1.GetNodeRequest{})
	must(t, err)

	resp, err := restClient(t, a, "reader").Get("https://" + a.addr.REST + "/v1/node")
	must(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /v1/node: %s: %s", resp.Status, body)
	}
	var r v1.Node
	must(t, protojson.Unmarshal(body, &r))
	// Uptimes move between the two calls; everything else must be identical.
	for _, n := range []*v1.Node{g, &r} {
		n.Uptime, n.AgentUptime = nil, nil
	}
	if !proto.Equal(g, &r) {
		t.Errorf("REST and gRPC disagree:\n grpc %v\n rest %v", g, &r)
	}
}

func TestRESTAuthAndErrors(t *testing.T) {
	a := startAgent(t)
	base := "https://" + a.addr.REST
	tests := []struct {
		name, who, method, path, body string
		wantHTTP                      int
		wantMsg                       string
	}{
		{"no cert", "", "GET", "/v1/node", "", http.StatusUnauthorized, "no client certificate"},
		{"foreign CA", "foreign", "GET", "/v1/node", "", http.StatusUnauthorized, "not issued by this cluster's CA"},
		{"expired", "expired", "GET", "/v1/node", "", http.StatusUnauthorized, "expired"},
		{"reader mutating", "reader", "POST", "/v1/node:checkHealth", "{}", http.StatusForbidden, "requires role operator"},
		{"spoofed identity header", "reader", "POST", "/v1/node:checkHealth", "{}", http.StatusForbidden, "requires role operator"},
		{"malformed JSON", "operator", "POST", "/v1/node:checkHealth", "{checks:", http.StatusBadRequest, ""},
		{"unknown field", "operator", "POST", "/v1/node:checkHealth", `{"chekcs":[]}`, http.StatusBadRequest, "chekcs"},
		{"bad id", "reader", "GET", "/v1/operations/nope", "", http.StatusBadRequest, "operation_id"},
		{"operator ok", "operator", "POST", "/v1/node:checkHealth", `{"checks":["node-certificate"]}`, http.StatusOK, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, err := http.NewRequest(tt.method, base+tt.path, bytes.NewBufferString(tt.body))
			must(t, err)
			if tt.name == "spoofed identity header" {
				req.Header.Set("Grpc-Metadata-X-Debvisor-Role", "admin")
				req.Header.Set("X-Debvisor-Role", "admin")
			}
			resp, err := restClient(t, a, tt.who).Do(req)
			must(t, err)
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != tt.wantHTTP {
				t.Fatalf("%s %s = %s: %s, want %d", tt.method, tt.path, resp.Status, body, tt.wantHTTP)
			}
			var st struct {
				Code    int    `json:"code"`
				Message string `json:"message"`
			}
			if tt.wantHTTP != http.StatusOK {
				must(t, json.Unmarshal(body, &st))
				if !strings.Contains(st.Message, tt.wantMsg) {
					t.Errorf("message %q does not contain %q", st.Message, tt.wantMsg)
				}
			}
		})
	}
}

func TestLocalSocket(t *testing.T) {
	a := startAgent(t)
	fi, err := os.Stat(a.cfg.Socket)
	must(t, err)
	if fi.Mode()&os.ModeSocket == 0 {
		t.Fatalf("%s is not a socket", a.cfg.Socket)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		t.Errorf("socket mode %v is accessible to group/others", perm)
	}
	conn, err := grpc.NewClient("passthrough:///local",
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", a.cfg.Socket)
		}))
	must(t, err)
	defer conn.Close()
	ctx := context.Background()
	n, err := v1.NewNodeServiceClient(conn).GetNode(ctx, &v1.GetNodeRequest{})
	must(t, err)
	if n.GetName() != "node1" {
		t.Errorf("name = %q", n.GetName())
	}
	// The local socket is admin: mutations work.
	op, err := v1.NewNodeServiceClient(conn).CheckHealth(ctx, &v1.CheckHealthRequest{})
	must(t, err)
	if !strings.HasPrefix(op.GetRequestedBy(), "local:uid=") {
		t.Errorf("requested_by = %q", op.GetRequestedBy())
	}
	// The standard health service answers too.
	h, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	must(t, err)
	if h.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health = %v", h.GetStatus())
	}
}

func TestMetrics(t *testing.T) {
	a := startAgent(t)
	_, err := v1.NewNodeServiceClient(a.dial(t, "reader")).GetNode(context.Background(), &v1.GetNodeRequest{})
	must(t, err)
	resp, err := http.Get("http://" + a.addr.Metrics + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	want := `debvisor_api_requests_total{code="OK",method="/debvisor.v1.NodeService/GetNode"} 1`
	if !strings.Contains(string(body), want) {
		t.Errorf("metrics lack %q", want)
	}
}
