// Package buildinfo owns the version stamp every DebVisor binary reports.
package buildinfo

import "runtime/debug"

// Version and Commit are set at link time:
//
//	-ldflags "-X github.com/debvisor/debvisor/internal/buildinfo.Version=v0.1.0"
var (
	Version = "dev"
	Commit  = ""
)

// String returns "VERSION (COMMIT)" or just the version when no commit is known.
func String() string {
	c := Commit
	if c == "" {
		if bi, ok := debug.ReadBuildInfo(); ok {
			for _, s := range bi.Settings {
				if s.Key == "vcs.revision" && len(s.Value) >= 12 {
					c = s.Value[:12]
				}
			}
		}
	}
	if c == "" {
		return Version
	}
	return Version + " (" + c + ")"
}
