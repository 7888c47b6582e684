package dvctl

import (
	"fmt"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// describe turns gRPC errors into a line a person at a console can act on.
func describe(err error) string {
	st, ok := status.FromError(err)
	if !ok {
		return err.Error()
	}
	hint := ""
	switch st.Code() {
	case codes.Unavailable:
		hint = " (is the agent running and the endpoint right? check --endpoint / the context)"
	case codes.Unauthenticated:
		hint = " (check --cert/--key and that they were issued by this cluster's CA)"
	case codes.PermissionDenied:
		hint = " (your certificate's role does not allow this; see: dvctl pki show CERT)"
	}
	return fmt.Sprintf("%s: %s%s", st.Code(), st.Message(), hint)
}
