package cluster

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/api/rules"
	"github.com/debvisor/debvisor/internal/pki"
	"github.com/debvisor/debvisor/nodeagent/discovery"
	"github.com/debvisor/debvisor/nodeagent/fault"
)

// JoinRequest is a node asking to join, as the Join RPC carries it.
type JoinRequest struct {
	Token    string
	NodeName string
	NodeID   string
	CSRPEM   []byte
}

// JoinResult is what a joining node receives.
type JoinResult struct {
	ClusterID   string
	CertPEM     []byte
	CABundlePEM []byte
	GossipKeys  [][]byte
	GossipPeers []string
	SignedBy    string
}

// checkShape validates the request's form, before any credential is looked
// at; errors name the field.
func (r JoinRequest) checkShape() (*x509.CertificateRequest, error) {
	if _, _, err := rules.ParseJoinToken(r.Token); err != nil {
		return nil, fault.Invalidf("token", "%w", err)
	}
	if err := rules.CheckHostname(r.NodeName); err != nil {
		return nil, fault.Invalidf("node_name", "%w", err)
	}
	if err := discovery.CheckNodeID(r.NodeID); err != nil {
		return nil, fault.Invalidf("node_id", "%w", err)
	}
	csr, err := pki.ParseCSR(r.CSRPEM)
	if err != nil {
		return nil, fault.Invalidf("csr_pem", "%w", err)
	}
	return csr, nil
}

// Join enrolls a node: the token is checked (nothing is changed when it is
// wrong or expired), the name must not belong to another live member, and
// the CSR is signed as a node certificate; the token's use is counted only
// then. A node without the CA key relays the request to one that has it.
func (n *Node) Join(ctx context.Context, req JoinRequest) (*JoinResult, error) {
	csr, err := req.checkShape()
	if err != nil {
		return nil, err
	}
	if !n.HoldsCA() {
		return n.relayJoin(ctx, req)
	}
	tok, err := n.tokens.Check(req.Token)
	if err != nil {
		n.log.Warn("join refused", "node", req.NodeName, "err", err)
		return nil, err
	}
	for _, m := range n.Members() {
		if m.Name == req.NodeName && (m.Self || m.NodeID != req.NodeID) {
			return nil, fault.Errorf(fault.AlreadyExists, "node_name: %q is already a member of cluster %s (at %s); choose another name or remove that node first", req.NodeName, n.st.ClusterID, m.APIAddr)
		}
	}
	ca, err := pki.LoadCA(pki.Files{Cert: n.cfg.CAFile, Key: n.cfg.CAKeyFile})
	if err != nil {
		return nil, fault.Errorf(fault.Internal, "load the cluster CA: %w", err)
	}
	cert, err := ca.SignNodeCSR(csr, req.NodeName, pki.Options{Now: n.cfg.Now})
	if err != nil {
		return nil, fault.Invalidf("csr_pem", "%w", err)
	}
	if err := n.tokens.Used(tok.ID); err != nil {
		return nil, err
	}
	res := &JoinResult{
		ClusterID: n.st.ClusterID, CertPEM: pki.EncodeCert(cert), CABundlePEM: n.caBytes,
		GossipKeys: n.keys.Keys, SignedBy: n.cfg.NodeName,
	}
	for _, m := range n.Members() {
		if m.GossipAddr != "" {
			res.GossipPeers = append(res.GossipPeers, m.GossipAddr)
		}
	}
	n.log.Info("node enrolled", "node", req.NodeName, "node_id", req.NodeID, "token", tok.ID, "serial", cert.SerialNumber.Text(16))
	return res, nil
}

// relayJoin passes a join request to a member holding the CA key, as this
// node (its node certificate); the signer checks the token itself.
func (n *Node) relayJoin(ctx context.Context, req JoinRequest) (*JoinResult, error) {
	var errs []error
	for _, m := range n.Members() {
		if !m.HoldsCA || m.Self || m.APIAddr == "" {
			continue
		}
		res, err := n.callJoin(ctx, m, req)
		if err == nil {
			n.log.Info("join relayed", "node", req.NodeName, "signer", m.Name)
			return res, nil
		}
		if c := status.Code(err); c != codes.Unavailable && c != codes.DeadlineExceeded {
			return nil, err // the signer's answer (bad token, name taken…)
		}
		errs = append(errs, fmt.Errorf("%s: %w", m.Name, err))
	}
	if len(errs) == 0 {
		return nil, fault.Errorf(fault.Unavailable, "no member holding the cluster CA key is alive to sign the request")
	}
	return nil, fault.Errorf(fault.Unavailable, "no signer answered: %w", errors.Join(errs...))
}

func (n *Node) callJoin(ctx context.Context, m Member, req JoinRequest) (*JoinResult, error) {
	conn, err := dialNode(n.cfg, m.Name, m.APIAddr)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	ctx, cancel := withCallTimeout(ctx)
	defer cancel()
	resp, err := v1.NewClusterServiceClient(conn).Join(ctx, joinRequestProto(req))
	if err != nil {
		return nil, err
	}
	return joinResultFromProto(resp), nil
}

func joinRequestProto(r JoinRequest) *v1.JoinRequest {
	return &v1.JoinRequest{Token: r.Token, NodeName: r.NodeName, NodeId: r.NodeID, CsrPem: string(r.CSRPEM)}
}

// JoinRequestFromProto converts the RPC's request.
func JoinRequestFromProto(r *v1.JoinRequest) JoinRequest {
	return JoinRequest{Token: r.GetToken(), NodeName: r.GetNodeName(), NodeID: r.GetNodeId(), CSRPEM: []byte(r.GetCsrPem())}
}

// Proto converts a result for the RPC's response.
func (r *JoinResult) Proto() *v1.JoinResponse {
	return &v1.JoinResponse{
		ClusterId: r.ClusterID, CertificatePem: string(r.CertPEM), CaBundlePem: string(r.CABundlePEM),
		GossipKeys: r.GossipKeys, GossipPeers: r.GossipPeers, SignedBy: r.SignedBy,
	}
}

func joinResultFromProto(r *v1.JoinResponse) *JoinResult {
	return &JoinResult{
		ClusterID: r.GetClusterId(), CertPEM: []byte(r.GetCertificatePem()), CABundlePEM: []byte(r.GetCaBundlePem()),
		GossipKeys: r.GetGossipKeys(), GossipPeers: r.GetGossipPeers(), SignedBy: r.GetSignedBy(),
	}
}

// CreateToken makes a join token; only a node holding the CA can.
func (n *Node) CreateToken(ttl time.Duration, description string) (string, Token, error) {
	if err := n.needCA(); err != nil {
		return "", Token{}, err
	}
	return n.tokens.Create(ttl, description)
}

// ListTokens lists the join tokens of a node holding the CA.
func (n *Node) ListTokens() ([]Token, error) {
	if err := n.needCA(); err != nil {
		return nil, err
	}
	return n.tokens.List(), nil
}

// DeleteToken removes a join token on a node holding the CA.
func (n *Node) DeleteToken(id string) error {
	if err := n.needCA(); err != nil {
		return err
	}
	return n.tokens.Delete(id)
}

func (n *Node) needCA() error {
	if n.HoldsCA() {
		return nil
	}
	return fault.Errorf(fault.FailedPrecondition, "node %s does not hold the cluster CA key, so it keeps no join tokens; ask a node that does (members holding it: %v; dvctl --node NAME cluster token …)", n.cfg.NodeName, n.Signers())
}
