package provider

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// describe turns an API error into text a Terraform user can act on: unreachable agents and refused
// certificates say so and say what to check, instead of a bare gRPC status.
func describe(endpoint string, err error) string {
	if errors.Is(err, context.DeadlineExceeded) {
		return fmt.Sprintf("The agent at %s did not answer in time (%v). Check the endpoint, or raise request_timeout.", endpoint, err)
	}
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	msg := st.Message()
	switch {
	case strings.Contains(msg, "x509:") || strings.Contains(msg, "certificate signed by unknown authority"):
		return fmt.Sprintf("The agent's certificate was not accepted: %s.\n\nCheck that ca_file/ca_pem (DEBVISOR_CA, DEBVISOR_CA_PEM) "+
			"is this cluster's CA and that the endpoint's host (or server_name) is in the node certificate.", msg)
	case strings.Contains(msg, "tls: unknown certificate authority") || strings.Contains(msg, "tls: bad certificate") ||
		strings.Contains(msg, "tls: certificate required") || strings.Contains(msg, "tls: expired certificate") ||
		strings.Contains(msg, "certificate") && st.Code() == codes.Unavailable:
		return fmt.Sprintf("The agent refused the client certificate: %s.\n\nCheck cert_file/key_file (DEBVISOR_CERT, DEBVISOR_KEY): "+
			"they must be a client certificate issued by this cluster's CA (dvctl pki issue client) and not expired.", msg)
	case st.Code() == codes.Unauthenticated:
		return fmt.Sprintf("The agent refused the client certificate: %s.\n\nCheck cert_file/key_file (DEBVISOR_CERT, DEBVISOR_KEY): "+
			"they must be a client certificate issued by this cluster's CA (dvctl pki issue client) and not expired.", msg)
	case st.Code() == codes.PermissionDenied:
		return fmt.Sprintf("Permission denied: %s.\n\nThe client certificate's role does not allow this call; managing resources needs "+
			"an operator or admin certificate (see dvctl pki show CERT).", msg)
	case (st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded) && strings.Contains(msg, "libvirtd"):
		return fmt.Sprintf("The agent at %s answered, but the node's libvirtd is slow or not answering: %s.\n\n"+
			"The provider retried for a while. Check libvirtd on the node (is it overloaded, or stuck?), then run the command again.", endpoint, msg)
	case st.Code() == codes.Unavailable:
		return fmt.Sprintf("The DebVisor agent at %s is unreachable: %s.\n\nIs debvisor-agent running (debvisor-rpcd.service) and "+
			"is endpoint (DEBVISOR_ENDPOINT) its HOST:PORT?", endpoint, msg)
	case st.Code() == codes.DeadlineExceeded:
		return fmt.Sprintf("The agent at %s did not answer in time: %s. Check the endpoint, or raise request_timeout.", endpoint, msg)
	}
	return fmt.Sprintf("%s: %s", st.Code(), msg)
}

// isNotFound reports whether err is the agent's NOT_FOUND, which Read turns into "gone from state".
func isNotFound(err error) bool { return status.Code(err) == codes.NotFound }
