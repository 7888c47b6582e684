// Package sysinfo owns reading the facts a node reports about itself:
// hostname, machine id, kernel, OS release, boot time and booted slot.
package sysinfo

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/debvisor/debvisor/osimage"
)

// Info is a snapshot of the node's identity.
type Info struct {
	Hostname   string
	MachineID  string
	Kernel     string
	Arch       string
	OSVersion  string
	BootedSlot string
	BootTime   time.Time
}

// Reader reads Info from a root directory ("/" on a node; a fixture dir in tests).
type Reader struct {
	Root string
}

// Cached reads the facts that cannot change while the system runs (machine
// id, kernel, booted slot, boot time, OS release of the read-only root) once,
// and the hostname on every call. The API serves these on every status call.
type Cached struct {
	once sync.Once
	info Info
	r    Reader
}

// NewCached returns a Cached reader over r.
func NewCached(r Reader) *Cached { return &Cached{r: r} }

// Read returns the cached facts with a fresh hostname.
func (c *Cached) Read() Info {
	c.once.Do(func() { c.info = c.r.Read() })
	in := c.info
	if h, err := os.Hostname(); err == nil {
		in.Hostname = h
	}
	return in
}

// Read gathers what it can; missing files yield empty fields, never errors,
// because a node agent must report status even on a half-broken system.
func (r Reader) Read() Info {
	root := r.Root
	if root == "" {
		root = "/"
	}
	var in Info
	in.Hostname, _ = os.Hostname()
	in.MachineID = strings.TrimSpace(readFile(filepath.Join(root, "etc/machine-id")))
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		in.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	in.Arch = runtime.GOARCH
	in.OSVersion = OSVersion(readFile(filepath.Join(root, osimage.ReleaseFile)))
	in.BootedSlot = BootedSlot(readFile(filepath.Join(root, "proc/cmdline")))
	in.BootTime = bootTime(readFile(filepath.Join(root, "proc/stat")))
	return in
}

// OSVersion returns the version from the slot's release file (written by
// the image builder, osimage.ReleaseFile), "unknown" when the agent does
// not run on a DebVisor image (a development machine) or the file is bad.
func OSVersion(release string) string {
	r, err := osimage.ParseRelease([]byte(release))
	if err != nil {
		return "unknown"
	}
	return r.Version
}

// BootedSlot returns the value of the debvisor.slot= kernel parameter.
func BootedSlot(cmdline string) string {
	for _, f := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(f, "debvisor.slot="); ok {
			return v
		}
	}
	return ""
}

func bootTime(stat string) time.Time {
	sc := bufio.NewScanner(strings.NewReader(stat))
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "btime "); ok {
			if s, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64); err == nil {
				return time.Unix(s, 0)
			}
		}
	}
	return time.Time{}
}

func readFile(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return ""
	}
	return string(bytes.TrimRight(b, "\x00"))
}
