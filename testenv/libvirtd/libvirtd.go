// Package libvirtd owns starting a real libvirtd for tests: when its socket
// does not answer, it starts virtlogd and libvirtd as daemons (there is no
// systemd on the build machines) and waits until qemu:///system answers.
// Tests that need libvirt call EnsureRunning; it fails the test with the
// reason when libvirt cannot be made to run, never skips.
package libvirtd

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/digitalocean/go-libvirt"
	"github.com/digitalocean/go-libvirt/socket/dialers"
)

// Socket is the qemu:///system socket the harness checks and starts.
const Socket = "/var/run/libvirt/libvirt-sock"

var (
	once    sync.Once
	onceErr error
)

// Env is what EnsureRunning found.
type Env struct {
	// Socket is libvirtd's read-write socket.
	Socket string
	// KVM says whether /dev/kvm is usable; domains fall back to TCG when not.
	KVM bool
}

// EnsureRunning makes sure libvirtd answers on Socket, starting virtlogd and
// libvirtd when it does not. The daemons are left running for later tests
// and packages (starting them takes seconds; they hold no test state).
func EnsureRunning(t testing.TB) Env {
	t.Helper()
	once.Do(func() { onceErr = ensure() })
	if onceErr != nil {
		t.Fatalf("libvirtd is required for this test and could not be made to run: %v", onceErr)
	}
	_, err := os.Stat("/dev/kvm")
	return Env{Socket: Socket, KVM: err == nil}
}

func ensure() error {
	// Before libvirtd looks at /dev/kvm: changing its mode later makes
	// libvirtd probe QEMU's capabilities again.
	if err := EnsureKVMAccess(); err != nil {
		return err
	}
	if err := ping(); err == nil {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("libvirtd is not answering on %s and starting it needs root (running as uid %d)", Socket, os.Geteuid())
	}
	for _, bin := range []string{"virtlogd", "libvirtd", "qemu-system-x86_64"} {
		if _, err := exec.LookPath(bin); err != nil {
			return fmt.Errorf("%s not found: install the packages in scripts/deps/libvirt.apt (scripts/install-deps)", bin)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	// virtlogd may already run (its socket is separate); a second -d start
	// fails harmlessly on the pid file, so only its output matters when
	// libvirtd then fails too.
	vlOut, _ := exec.CommandContext(ctx, "virtlogd", "-d").CombinedOutput()
	if out, err := exec.CommandContext(ctx, "libvirtd", "-d").CombinedOutput(); err != nil {
		return fmt.Errorf("libvirtd -d: %w: %s (virtlogd: %s)", err, strings.TrimSpace(string(out)), strings.TrimSpace(string(vlOut)))
	}
	var last error
	for ctx.Err() == nil {
		if last = ping(); last == nil {
			return nil
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("libvirtd started but %s did not answer within 30 s: %w", Socket, last)
}

func ping() error {
	lv := libvirt.NewWithDialer(dialers.NewLocal(dialers.WithSocket(Socket), dialers.WithLocalTimeout(2*time.Second)))
	if err := lv.ConnectToURI(libvirt.QEMUSystem); err != nil {
		return err
	}
	defer func() { _ = lv.Disconnect() }()
	_, err := lv.ConnectGetLibVersion()
	return err
}

// EnsureKVMAccess gives the kvm group read-write access to /dev/kvm, as
// udev's rule does on a normal Debian host. Machines without udev (CI,
// containers) leave the node root-only: QEMU started by libvirtd as
// libvirt-qemu (a member of kvm) then fails with "Could not access KVM
// kernel module", and libvirtd, finding KVM present but unusable, probes
// QEMU's capabilities again on every domain definition. A missing /dev/kvm
// is fine (domains use TCG); a missing kvm group is left alone.
func EnsureKVMAccess() error {
	st, err := os.Stat("/dev/kvm")
	if err != nil {
		return nil
	}
	grp, err := user.LookupGroup("kvm")
	if err != nil {
		return nil
	}
	gid, err := strconv.Atoi(grp.Gid)
	if err != nil {
		return nil
	}
	sys, ok := st.Sys().(*syscall.Stat_t)
	if ok && int(sys.Gid) == gid && st.Mode().Perm()&0o060 == 0o060 {
		return nil
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("/dev/kvm is not read-write for the kvm group (mode %v) and fixing it needs root", st.Mode().Perm())
	}
	if err := os.Chown("/dev/kvm", 0, gid); err != nil {
		return fmt.Errorf("chown /dev/kvm: %w", err)
	}
	if err := os.Chmod("/dev/kvm", st.Mode().Perm()|0o660); err != nil {
		return fmt.Errorf("chmod /dev/kvm: %w", err)
	}
	return nil
}
