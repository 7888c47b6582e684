package storage

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestCheckName(t *testing.T) {
	for _, ok := range []string{"a", "web-1", "disk0.qcow2", "A_b"} {
		if err := CheckName("name", ok); err != nil {
			t.Errorf("CheckName(%q) = %v", ok, err)
		}
	}
	for _, bad := range []string{"", "-x", ".hidden", "a/b", "a b", strings.Repeat("x", 65), "../etc"} {
		if err := CheckName("name", bad); status.Code(err) != codes.InvalidArgument || !strings.HasPrefix(status.Convert(err).Message(), "name: ") {
			t.Errorf("CheckName(%q) = %v, want InvalidArgument name: …", bad, err)
		}
	}
}
