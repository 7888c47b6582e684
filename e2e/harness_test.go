// Package e2e_test proves the parts together, inside the image they belong
// to: DebVisor images built by the real builder, booted under QEMU, driven
// through the real agent API, dvctl and OpenTofu, with releases in a real
// OCI registry. Nothing here is shipped.
package e2e_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"maps"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	ggcr "github.com/google/go-containerregistry/pkg/registry"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/imagebuilder"
	"github.com/debvisor/debvisor/internal/qemu"
	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/registry"
	"github.com/debvisor/debvisor/osimage/signature"
)

// testEpoch is the SOURCE_DATE_EPOCH of every image the tests build.
const testEpoch = 1700000000

// bootTimeout bounds one boot to "the agent answers" under TCG on a busy
// 2-core machine.
const bootTimeout = 8 * time.Minute

func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	return filepath.Dir(filepath.Dir(file))
}

func requireTools(t testing.TB, tools ...string) {
	t.Helper()
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is required (scripts/install-deps installs it): %v", tool, err)
		}
	}
	if os.Geteuid() != 0 {
		t.Fatal("the end-to-end tests need root (image builds, QEMU)")
	}
}

func run(t testing.TB, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

var (
	binOnce sync.Once
	binDir  string
	binErr  error
)

// binaries builds debvisor-agent, dvctl and the Terraform provider once.
func binaries(t testing.TB) string {
	t.Helper()
	binOnce.Do(func() {
		if binDir, binErr = os.MkdirTemp("", "debvisor-e2e-bin-"); binErr != nil {
			return
		}
		cmd := exec.Command("go", "build", "-trimpath", "-o", binDir+"/", "./cmd/debvisor-agent", "./cmd/dvctl", "./cmd/terraform-provider-debvisor")
		cmd.Dir = repoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			binErr = fmt.Errorf("go build: %w\n%s", err, out)
		}
	})
	if binErr != nil {
		t.Fatal(binErr)
	}
	return binDir
}

// release is one built image of the test's OS versions.
type release struct {
	Version string
	Result  *imagebuilder.Result
	// Ref is where the node finds it (the registry through QEMU's
	// loopback forward), HostRef where the test pushed it.
	Ref, HostRef string
}

// build makes an image of the default spec with version and extra kernel
// arguments. Only the first build of a session compresses the Debian
// tree; the others append their layer to the cached base.
func build(ctx context.Context, t testing.TB, version, extraCmdline string) *imagebuilder.Result {
	t.Helper()
	requireTools(t, "mmdebstrap", "mksquashfs", "grub-mkimage", "mkfs.ext4", "qemu-img")
	bin := binaries(t)
	spec, err := imagebuilder.DefaultSpec()
	if err != nil {
		t.Fatal(err)
	}
	spec.Version = version
	// No menu countdown: once, the v5 boot of TestNodeLifecycle sat at
	// GRUB's (hidden) menu for over 12 minutes, QEMU spinning, with the env
	// in order — GRUB's timer under TCG on a loaded host is the suspect
	// (it calibrates the TSC at start). A node's GRUB never waits for a key
	// anyway; these tests judge its choice from the line it prints next.
	spec.BootTimeout = 0
	if extraCmdline != "" {
		spec.KernelCmdline += " " + extraCmdline
	}
	out := filepath.Join(t.TempDir(), "image-"+version)
	t0 := time.Now()
	res, err := imagebuilder.Build(ctx, spec, out,
		imagebuilder.WithBinaries(filepath.Join(bin, "debvisor-agent"), filepath.Join(bin, "dvctl")),
		imagebuilder.WithSourceDateEpoch(testEpoch),
		imagebuilder.WithQcow2(false))
	if err != nil {
		t.Fatalf("build %s: %v", version, err)
	}
	t.Logf("built %s in %s (rootfs cached %v, base cached %v)", version, time.Since(t0).Round(time.Second), res.RootfsCached, res.BaseCached)
	return res
}

// registryServer is go-containerregistry's registry on 127.0.0.1 and a
// release key: what a CI system pushing signed releases looks like.
type registryServer struct {
	Host   string // 127.0.0.1:PORT
	Client *registry.Client
	Signer *signature.Signer
	PubPEM []byte
}

func startRegistry(t testing.TB) *registryServer {
	t.Helper()
	// Blobs on disk: five releases of slot and disk images would hold
	// gigabytes in the test's memory.
	srv := httptest.NewServer(ggcr.New(ggcr.Logger(log.New(io.Discard, "", 0)), ggcr.WithBlobHandler(ggcr.NewDiskBlobHandler(t.TempDir()))))
	t.Cleanup(srv.Close)
	c, err := registry.New(registry.WithInsecureHTTP(true))
	if err != nil {
		t.Fatal(err)
	}
	k, err := signature.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	s, err := signature.NewSigner(k)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := signature.MarshalPublicKey(&k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	return &registryServer{Host: strings.TrimPrefix(srv.URL, "http://"), Client: c, Signer: s, PubPEM: pub}
}

// push publishes a build output as a signed release and returns the
// reference the guest uses (10.0.2.2 is the host's loopback in QEMU's
// user-mode network).
func (r *registryServer) push(ctx context.Context, t testing.TB, res *imagebuilder.Result) release {
	t.Helper()
	l, err := artifact.FromDir(ctx, filepath.Dir(res.Raw))
	if err != nil {
		t.Fatal(err)
	}
	v := res.Manifest.Version
	host := r.Host + "/debvisor/os:" + v
	ref, err := r.Client.ParseReference(host)
	if err != nil {
		t.Fatal(err)
	}
	pr, err := r.Client.Push(ctx, ref, l.Index())
	if err != nil {
		t.Fatalf("push %s: %v", v, err)
	}
	if _, err := r.Client.Sign(ctx, pr.Digest, r.Signer); err != nil {
		t.Fatalf("sign %s: %v", v, err)
	}
	port := r.Host[strings.LastIndex(r.Host, ":")+1:]
	return release{Version: v, Result: res, HostRef: host, Ref: "10.0.2.2:" + port + "/debvisor/os:" + v}
}

// seed is a node's first-boot material: a cluster CA with node and admin
// certificates (made with dvctl, as a user would), an SSH key, and a
// preseed carrying them plus files for /etc.
type seed struct {
	Dir, ISO, SSHKey string
	Creds            qemu.Credentials
}

func newSeed(t testing.TB, files map[string]string) seed {
	t.Helper()
	requireTools(t, "ssh", "ssh-keygen")
	dvctl := filepath.Join(binaries(t), "dvctl")
	dir := t.TempDir()
	pki := filepath.Join(dir, "pki")
	run(t, dvctl, "pki", "init-ca", "--dir", pki)
	run(t, dvctl, "pki", "issue", "node", "node1", "--dir", pki, "--host", "127.0.0.1", "--host", "node1")
	run(t, dvctl, "pki", "issue", "client", "admin", "--role", "admin", "--dir", pki)
	key := filepath.Join(dir, "id_ed25519")
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", key)
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "version: 1\nhostname: node1\nssh_authorized_keys:\n  - %s\npki:\n  ca: pki/ca.crt\n  cert: pki/node1.crt\n  key: pki/node1.key\n", strings.TrimSpace(string(pub)))
	if len(files) > 0 {
		b.WriteString("files:\n")
		for _, p := range sortedKeys(files) {
			fmt.Fprintf(&b, "  - path: %s\n    mode: \"0644\"\n    content: |\n", p)
			for _, line := range strings.Split(strings.TrimRight(files[p], "\n"), "\n") {
				fmt.Fprintf(&b, "      %s\n", line)
			}
		}
	}
	ps := filepath.Join(dir, "preseed.yaml")
	if err := os.WriteFile(ps, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	iso := filepath.Join(dir, "seed.iso")
	if err := imagebuilder.MakeSeed(ps, iso); err != nil {
		t.Fatal(err)
	}
	return seed{Dir: dir, ISO: iso, SSHKey: key, Creds: qemu.Credentials{
		CA: filepath.Join(pki, "ca.crt"), Cert: filepath.Join(pki, "admin.crt"), Key: filepath.Join(pki, "admin.key")}}
}

func sortedKeys(m map[string]string) []string { return slices.Sorted(maps.Keys(m)) }

// node is a booted DebVisor node under QEMU (SeaBIOS unless
// DEBVISOR_E2E_FIRMWARE=uefi, TCG).
type node struct {
	t    testing.TB
	m    *qemu.Machine
	seed seed
	disk string
	con  *timedConsole
}

// e2eFirmware is the nodes' firmware: SeaBIOS unless DEBVISOR_E2E_FIRMWARE
// says uefi. Under TCG on the development machines, UEFI nodes froze
// across reboots in four of six full runs: OVMF printed nothing after
// `reboot: machine restart` for eight minutes (with two vCPUs and with
// one, spinning in its DXE phase), and once the console stopped in the middle of a shutdown; SeaBIOS
// nodes never did. The A/B logic is GRUB's script, the same on both
// platforms, and the UEFI path keeps its first-boot test
// (imagebuilder's TestBootWithoutNetworkStartsNetcfg boots OVMF, TCG).
// docs/architecture.md, "QEMU on the development machines".
func e2eFirmware(t testing.TB) qemu.Firmware {
	switch f := os.Getenv("DEBVISOR_E2E_FIRMWARE"); f {
	case "", "bios":
		return qemu.FirmwareBIOS
	case "uefi":
		return qemu.FirmwareUEFI
	default:
		t.Fatalf("DEBVISOR_E2E_FIRMWARE=%q: want bios or uefi", f)
		return ""
	}
}

// bootNode boots raw (through a copy-on-write overlay of diskSize) with
// the seed attached; opts adjust the machine (more NICs, the monitor,
// another firmware).
func bootNode(ctx context.Context, t testing.TB, raw, diskSize string, s seed, opts ...func(*qemu.Config)) *node {
	t.Helper()
	dir := t.TempDir()
	disk := filepath.Join(dir, "disk.qcow2")
	if err := qemu.Overlay(ctx, raw, disk, diskSize); err != nil {
		t.Fatal(err)
	}
	var fwd []qemu.Forward
	for _, g := range []int{22, qemu.AgentPort} {
		p, err := qemu.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		fwd = append(fwd, qemu.Forward{Host: p, Guest: g})
	}
	cfg := qemu.Config{
		Name: "debvisor-e2e", Dir: dir, Firmware: e2eFirmware(t), Accel: qemu.AccelTCG, MemoryMiB: 2048,
		// QEMU's default CPU offers SVM, which TCG emulates: the node
		// would run its VMs under nested KVM on an emulated CPU, which
		// hung the node's reboot. Without it the node has no KVM and its
		// VMs run under plain QEMU emulation, as on hardware without
		// virtualisation extensions.
		CPU:     "qemu64,svm=off",
		CPUs:    2,
		Drives:  []qemu.Drive{{File: disk, Format: "qcow2"}, {File: s.ISO, Format: "raw", ReadOnly: true}},
		Network: true, Forwards: fwd,
		// The monitor answers where a silent guest's CPUs are.
		Monitor: true,
	}
	for _, o := range opts {
		o(&cfg)
	}
	m, err := qemu.Start(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	cctx, stopConsole := context.WithCancel(context.Background())
	con := newTimedConsole(cctx, m.SerialLog())
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("serial console of the node (each line stamped with when it arrived):\n%s", con.tail(250))
			t.Logf("the guest, from QEMU's monitor:\n%s", guestState(m))
			holdFailedNode(t, m, s)
		}
		con.save(t)
		stopConsole()
		_ = m.Stop()
	})
	return &node{t: t, m: m, seed: s, disk: disk, con: con}
}

// holdFailedNode keeps a failed test's node running for a developer to
// log in, when DEBVISOR_E2E_HOLD is a duration ("20m"). Never set in CI.
func holdFailedNode(t testing.TB, m *qemu.Machine, s seed) {
	d, err := time.ParseDuration(os.Getenv("DEBVISOR_E2E_HOLD"))
	if err != nil || d <= 0 {
		return
	}
	fmt.Fprintf(os.Stderr, "holding the failed node for %s: ssh -i %s -p %d -o StrictHostKeyChecking=no root@127.0.0.1\n", d, s.SSHKey, m.HostPort(22))
	time.Sleep(d)
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// client dials the node's agent as admin over mTLS.
func (n *node) client() *client.Client {
	n.t.Helper()
	c, err := client.New(client.Config{Endpoint: n.m.AgentEndpoint(), CAFile: n.seed.Creds.CA, CertFile: n.seed.Creds.Cert, KeyFile: n.seed.Creds.Key, ServerName: "127.0.0.1"})
	if err != nil {
		n.t.Fatal(err)
	}
	n.t.Cleanup(func() { c.Close() })
	return c
}

// waitAgent waits until the agent answers GetNode and returns it.
func (n *node) waitAgent(ctx context.Context) *v1.Node {
	n.t.Helper()
	c := n.client()
	var got *v1.Node
	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	err := n.m.WaitFor(ctx, 3*time.Second, "the agent to answer over mTLS", func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var err error
		got, err = c.Node.GetNode(cctx, &v1.GetNodeRequest{})
		return err
	})
	if err != nil {
		n.t.Fatal(err)
	}
	return got
}

// ssh runs a command as root on the node.
func (n *node) ssh(ctx context.Context, command string) (string, error) {
	out, err := n.m.SSH(ctx, n.seed.SSHKey, command)
	return strings.TrimSpace(out), err
}

// waitSSH waits until sshd on the node lets the test's key in.
func (n *node) waitSSH(ctx context.Context) {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	if err := n.m.WaitFor(ctx, 3*time.Second, "SSH", func(ctx context.Context) error {
		out, err := n.ssh(ctx, "true")
		if err != nil {
			return fmt.Errorf("%w: %s", err, out)
		}
		return nil
	}); err != nil {
		n.t.Fatal(err)
	}
}

func (n *node) mustSSH(ctx context.Context, command string) string {
	n.t.Helper()
	out, err := n.ssh(ctx, command)
	if err != nil {
		n.t.Fatalf("ssh %q: %v\n%s", command, err, out)
	}
	return out
}

// grubBoots is GRUB's boot decisions so far, from the serial console.
func (n *node) grubBoots() []qemu.GRUBBoot { return qemu.GRUBBoots(n.m.Console()) }

// waitBoots waits until GRUB has made want boot decisions.
func (n *node) waitBoots(ctx context.Context, want int) []qemu.GRUBBoot {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	err := n.m.WaitFor(ctx, 2*time.Second, fmt.Sprintf("GRUB's boot #%d", want), func(context.Context) error {
		if got := len(n.grubBoots()); got < want {
			return fmt.Errorf("%d boots so far", got)
		}
		return nil
	})
	if err != nil {
		n.t.Fatalf("%v (%s)", err, n.con.silence())
	}
	return n.grubBoots()
}

// waitSlots polls GetSlots until cond holds.
func (n *node) waitSlots(ctx context.Context, what string, cond func(*v1.SlotStatus) bool) *v1.SlotStatus {
	n.t.Helper()
	c := v1.NewUpgradeServiceClient(n.client().Conn())
	var st *v1.SlotStatus
	ctx, cancel := context.WithTimeout(ctx, bootTimeout)
	defer cancel()
	err := n.m.WaitFor(ctx, 3*time.Second, what, func(ctx context.Context) error {
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		var err error
		if st, err = c.GetSlots(cctx, &v1.GetSlotsRequest{}); err != nil {
			return err
		}
		if !cond(st) {
			return fmt.Errorf("not yet: %v", st)
		}
		return nil
	})
	if err != nil {
		n.t.Fatal(err)
	}
	return st
}

func slot(st *v1.SlotStatus, name string) *v1.Slot {
	for _, s := range st.GetSlots() {
		if s.GetName() == name {
			return s
		}
	}
	return &v1.Slot{}
}

// upgrade starts an upgrade and waits for the operation (it succeeds
// before the node reboots).
func (n *node) upgrade(ctx context.Context, ref string, mode v1.UpgradeRequest_Mode) *v1.Operation {
	n.t.Helper()
	c := n.client()
	op, err := v1.NewUpgradeServiceClient(c.Conn()).Upgrade(ctx, &v1.UpgradeRequest{Ref: ref, Mode: mode})
	if err != nil {
		n.t.Fatalf("Upgrade(%s): %v", ref, err)
	}
	done, err := c.Operations.WaitOperation(ctx, &v1.WaitOperationRequest{OperationId: op.GetId(), Timeout: durationpb.New(10 * time.Minute)})
	if err != nil {
		n.t.Fatalf("wait for the upgrade: %v", err)
	}
	if done.GetState() != v1.Operation_STATE_SUCCEEDED {
		n.t.Fatalf("upgrade to %s: %s: %s", ref, done.GetState(), done.GetError())
	}
	return done
}
