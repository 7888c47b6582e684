package imagebuilder_test

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/debvisor/debvisor/imagebuilder"
)

// BenchmarkBootVsMinbase sets the DebVisor image's boot beside a plain
// Debian minbase image's, in one run on the same QEMU: q35, 1.5 GiB, 2
// vCPUs, TCG, SeaBIOS loading the kernel itself (-kernel/-initrd/-append,
// firmware and GRUB skipped), both booting the same kernel file (slot A's).
//
//   - DebVisor: the default image with slot A's kernel, initrd and exactly
//     GRUB's command line (slotADirectBoot, as
//     BenchmarkImageBootToAgentKVMDirectKernel boots it, but under TCG) and
//     a seed volume; measured from QEMU start to the first successful mTLS
//     `dvctl status` through the forwarded port.
//   - minbase: `mmdebstrap --variant=minbase` of the default spec's suite
//     and mirror with only the kernel, systemd-sysv and udev (agetty, which
//     the serial getty runs, is in util-linux, which minbase has), as an
//     ext4 filesystem on the whole virtual disk (no partition table) with
//     its own initrd and root=/dev/vda; measured from QEMU start to
//     "login:" on the serial console. It is built once and cached under
//     $DEBVISOR_CACHE/bench-minbase.
//
// The two alternate (the order flips every round, so a drift in the
// machine's load does not favour either) and the medians are reported
// with their ratio (target: DebVisor <= 1.3x minbase). The full UEFI path
// (OVMF, GRUB, TCG: BenchmarkImageBootToAgent's boot) is measured once per
// process, so the figures show what firmware and GRUB add. For each boot
// the first appearance of milestones on the serial console (kernel,
// initramfs, systemd, firstboot and its steps, libvirtd, the login prompt)
// is recorded, in host seconds since QEMU start, to show where the time
// goes.
//
// go test keeps only 10 lines of a benchmark's log, so the image build
// logs, every run's milestones and every console go to a report directory
// (its path is the first log line) and the log has one line per round.
//
//	go test -run '^$' -bench BootVsMinbase -benchtime 3x -timeout 90m ./imagebuilder/
func BenchmarkBootVsMinbase(b *testing.B) {
	rep := bootCmpReport(b)
	quiet := reportTB{TB: b, rep: rep}
	img := defaultImage(quiet)
	seed := newSeed(quiet)
	kernel, initrd, cmdline := slotADirectBoot(b, img)
	mb := minbaseImage(b, rep, kernel)
	rep.printf("DebVisor: kernel %s, initrd %s, -append %q", kernel, initrd, cmdline)
	rep.printf("minbase: %s, initrd %s, -append %q (kernel %s)", mb.image, mb.initrd, minbaseAppend, mb.kernelVersion)

	// The UEFI path once per process: it is the context for the
	// direct-kernel figures, not what they are compared with.
	uefiOnce.Do(func() {
		r := bootDebVisor(b, rep, img.Raw, vmConfig{Firmware: "uefi", DiskSize: "6G", Seed: seed.seed, Network: true}, seed, "uefi")
		uefiBoot = &r
		b.Logf("UEFI (OVMF, GRUB, TCG) to agent answers: %.1fs (%s)", r.total.Seconds(), r.marks)
	})

	dvCfg := vmConfig{DiskSize: "6G", Seed: seed.seed, Network: true, Firmware: "bios", Accel: "tcg",
		Kernel: kernel, Initrd: initrd, Append: cmdline}
	mbCfg := vmConfig{DiskSize: mb.size, Network: true, Firmware: "bios", Accel: "tcg",
		Kernel: kernel, Initrd: mb.initrd, Append: minbaseAppend}
	var dv, mn []bootResult
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var d, m bootResult
		if i%2 == 0 {
			d = bootDebVisor(b, rep, img.Raw, dvCfg, seed, "direct")
			m = bootMinbase(b, rep, mb.image, mbCfg)
		} else {
			m = bootMinbase(b, rep, mb.image, mbCfg)
			d = bootDebVisor(b, rep, img.Raw, dvCfg, seed, "direct")
		}
		dv, mn = append(dv, d), append(mn, m)
		line := fmt.Sprintf("round %d/%d: DebVisor %.1fs (%s); minbase %.1fs (%s)",
			i+1, b.N, d.total.Seconds(), d.marks, m.total.Seconds(), m.marks)
		rep.printf("%s", line)
		b.Logf("%s", line)
	}
	b.StopTimer()

	dvMed, mnMed := medianTotal(dv), medianTotal(mn)
	b.ReportMetric(dvMed, "debvisor-s/boot")
	b.ReportMetric(mnMed, "minbase-s/boot")
	b.ReportMetric(dvMed/mnMed, "ratio")
	b.ReportMetric(uefiBoot.total.Seconds(), "debvisor-uefi-s")
	summary := fmt.Sprintf("N=%d medians: DebVisor direct-kernel/TCG to agent %.1fs %s, minbase to login %.1fs %s, ratio %.2f (target <= 1.3); UEFI path once %.1fs; DebVisor milestones (median): %s",
		b.N, dvMed, totals(dv), mnMed, totals(mn), dvMed/mnMed, uefiBoot.total.Seconds(), medianMarks(dv, debvisorMarkers))
	rep.printf("%s\nminbase milestones (median): %s", summary, medianMarks(mn, minbaseMarkers))
	b.Logf("%s", summary)
}

// minbaseAppend is the plain image's kernel command line: an ext4 root on
// the whole first virtio disk and the serial console the login prompt is
// read from.
const minbaseAppend = "root=/dev/vda rw console=ttyS0,115200n8"

var (
	uefiOnce sync.Once
	uefiBoot *bootResult

	bootCmpOnce sync.Once
	bootCmpRep  *bootReport
	bootCount   int
)

// bootMarker is console text whose first appearance a boot records.
type bootMarker struct{ name, text string }

// debvisorMarkers are the DebVisor image's milestones. systemd prints unit
// status because the image's command line has systemd.show_status=1, but
// cuts long unit names to the console's width and stops once the serial
// getty owns the console; firstboot's own lines (journal+console) carry on.
var debvisorMarkers = []bootMarker{
	{"kernel", "Linux version"},
	{"initramfs", "Run /init as init process"},
	{"systemd", "Welcome to Debian"},
	{"firstboot", "Starting debvisor-firstboo"},
	{"libvirtd", "Starting libvirtd.service"},
	{"login", "login:"},
	{"hostkeys", "ssh host keys generated"},
	{"firstboot-done", "first boot complete"},
}

// minbaseMarkers are the plain image's (systemd shows its status on the
// console by default).
var minbaseMarkers = []bootMarker{
	{"kernel", "Linux version"},
	{"initramfs", "Run /init as init process"},
	{"systemd", "Welcome to Debian"},
	{"login", "login:"},
}

// bootResult is one boot: QEMU start to ready, and when each milestone
// was first seen on the console (host time since QEMU start).
type bootResult struct {
	total time.Duration
	marks marks
}

type marks []mark

type mark struct {
	name string
	at   time.Duration
}

func (ms marks) String() string {
	parts := make([]string, 0, len(ms))
	for _, m := range ms {
		parts = append(parts, fmt.Sprintf("%s %.1f", m.name, m.at.Seconds()))
	}
	return strings.Join(parts, ", ")
}

// ansi matches the colour and cursor sequences systemd's status lines
// carry on a serial console.
var ansi = regexp.MustCompile(`\x1b\[[0-9;?]*[A-Za-z]`)

// bootUntil starts a guest and polls its console every 250 ms for the
// markers and, at most every probeEvery, ready, until ready returns true.
// It fails when QEMU exits or bootTimeout passes. The console is kept in
// the report as name-<n>.console.
func bootUntil(b *testing.B, rep *bootReport, name, image string, cfg vmConfig, sshKey string,
	markers []bootMarker, probeEvery time.Duration, ready func(v *vm) bool) bootResult {
	b.Helper()
	bootCount++
	n := bootCount
	t0 := time.Now()
	v := startVM(b, image, cfg, sshKey)
	if v.accel != "tcg" {
		b.Fatalf("%s: QEMU runs under %s, want tcg", name, v.accel)
	}
	seen := map[string]time.Duration{}
	var lastProbe time.Time
	deadline := t0.Add(bootTimeout)
	var res bootResult
	for {
		con := ansi.ReplaceAllString(v.console(), "")
		now := time.Since(t0)
		for _, m := range markers {
			if _, ok := seen[m.name]; !ok && strings.Contains(con, m.text) {
				seen[m.name] = now
			}
		}
		if time.Since(lastProbe) >= probeEvery {
			lastProbe = time.Now()
			if ready(v) {
				res.total = time.Since(t0)
				break
			}
		}
		if gone, err := v.exited(); gone {
			b.Fatalf("%s: qemu exited (%v) before it was ready", name, err)
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s: not ready within %s", name, bootTimeout)
		}
		time.Sleep(250 * time.Millisecond)
	}
	con := v.console()
	v.stop()
	for _, m := range markers {
		if at, ok := seen[m.name]; ok {
			res.marks = append(res.marks, mark{m.name, at})
		}
	}
	sort.SliceStable(res.marks, func(i, j int) bool { return res.marks[i].at < res.marks[j].at })
	file := filepath.Join(rep.dir, fmt.Sprintf("%s-%d.console", name, n))
	if err := os.WriteFile(file, []byte(con), 0o644); err != nil {
		b.Fatal(err)
	}
	rep.printf("boot %d %s: ready after %.2fs; %s; console %s", n, name, res.total.Seconds(), res.marks, file)
	return res
}

// bootDebVisor boots the DebVisor image until `dvctl status` succeeds,
// probing every 500 ms as BenchmarkImageBootToAgent does.
func bootDebVisor(b *testing.B, rep *bootReport, image string, cfg vmConfig, seed seedFixture, name string) bootResult {
	b.Helper()
	return bootUntil(b, rep, "debvisor-"+name, image, cfg, seed.sshKey, debvisorMarkers, 500*time.Millisecond, func(v *vm) bool {
		_, err := dvctlStatus(b, seed, v.apiPort)
		return err == nil
	})
}

// bootMinbase boots the plain image until its login prompt.
func bootMinbase(b *testing.B, rep *bootReport, image string, cfg vmConfig) bootResult {
	b.Helper()
	return bootUntil(b, rep, "minbase", image, cfg, "", minbaseMarkers, 0, func(v *vm) bool {
		return strings.Contains(v.console(), "login:")
	})
}

func medianTotal(rs []bootResult) float64 {
	s := make([]float64, 0, len(rs))
	for _, r := range rs {
		s = append(s, r.total.Seconds())
	}
	return median(s)
}

// median of a non-empty slice (the upper one of the two middle values
// for an even count, as the other boot benchmarks report).
func median(s []float64) float64 {
	s = append([]float64(nil), s...)
	sort.Float64s(s)
	return s[len(s)/2]
}

func totals(rs []bootResult) string {
	parts := make([]string, 0, len(rs))
	for _, r := range rs {
		parts = append(parts, fmt.Sprintf("%.1f", r.total.Seconds()))
	}
	return "(" + strings.Join(parts, ", ") + ")"
}

// medianMarks gives each milestone's median over the boots that saw it.
func medianMarks(rs []bootResult, markers []bootMarker) marks {
	var out marks
	for _, m := range markers {
		var s []float64
		for _, r := range rs {
			for _, x := range r.marks {
				if x.name == m.name {
					s = append(s, x.at.Seconds())
				}
			}
		}
		if len(s) > 0 {
			out = append(out, mark{m.name, time.Duration(median(s) * float64(time.Second))})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].at < out[j].at })
	return out
}

// bootReport is the benchmark's full log: a directory that outlives the
// run, with report.log and every boot's console.
type bootReport struct {
	dir string
	mu  sync.Mutex
	f   *os.File
}

func bootCmpReport(b *testing.B) *bootReport {
	b.Helper()
	bootCmpOnce.Do(func() {
		dir, err := os.MkdirTemp("", "debvisor-bootcmp-")
		if err != nil {
			b.Fatal(err)
		}
		f, err := os.Create(filepath.Join(dir, "report.log"))
		if err != nil {
			b.Fatal(err)
		}
		bootCmpRep = &bootReport{dir: dir, f: f}
		b.Logf("full report: %s", f.Name())
	})
	if bootCmpRep == nil {
		b.Fatal("no report directory")
	}
	return bootCmpRep
}

func (r *bootReport) printf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	fmt.Fprintf(r.f, "%s "+format+"\n", append([]any{time.Now().Format(time.TimeOnly)}, args...)...)
}

// reportTB sends a helper's logs (the image build's progress) to the
// report instead of the benchmark's 10-line log; failures still go to the
// benchmark.
type reportTB struct {
	testing.TB
	rep *bootReport
}

func (t reportTB) Log(args ...any) { t.rep.printf("%s", fmt.Sprint(args...)) }

func (t reportTB) Logf(format string, args ...any) { t.rep.printf(format, args...) }

// minbaseFormat changes whenever the way the cached minbase image is made
// changes.
const minbaseFormat = "debvisor-bench-minbase-v1"

// minbasePackages are all a serial login prompt needs on top of minbase.
var minbasePackages = []string{"linux-image-amd64", "systemd-sysv", "udev"}

// minbaseMeta is written last beside the cached image: its presence means
// the entry is complete.
type minbaseMeta struct {
	Suite         string   `json:"suite"`
	Mirror        string   `json:"mirror"`
	Packages      []string `json:"packages"`
	KernelVersion string   `json:"kernel_version"`
	Size          string   `json:"size"`
}

type minbase struct {
	image, initrd, kernelVersion, size string
}

// minbaseImageSize is the ext4 filesystem's size (sparse; the tree is
// about 450 MB).
const minbaseImageSize = "2G"

// minbaseImage returns the cached plain image for the default spec's suite
// and mirror, building it when absent, and checks that its kernel is the
// version of kernel (the DebVisor slot's, which both images boot).
func minbaseImage(b *testing.B, rep *bootReport, kernel string) minbase {
	b.Helper()
	requireTools(b, "mmdebstrap", "mkfs.ext4")
	spec, err := imagebuilder.DefaultSpec()
	if err != nil {
		b.Fatal(err)
	}
	mirror := spec.Mirror
	if mirror == "" {
		if mirror, err = imagebuilder.HostMirror("/"); err != nil {
			b.Fatal(err)
		}
	}
	h := sha256.New()
	fmt.Fprintf(h, "%s\nsuite=%s\nmirror=%s\npackages=%s\nsize=%s\n", minbaseFormat, spec.Suite, mirror, strings.Join(minbasePackages, ","), minbaseImageSize)
	dir := filepath.Join(imagebuilder.CacheDirFromEnv(), "bench-minbase", hex.EncodeToString(h.Sum(nil))[:32])
	if err := os.MkdirAll(filepath.Dir(dir), 0o755); err != nil {
		b.Fatal(err)
	}
	lock, err := os.OpenFile(dir+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		b.Fatal(err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		b.Fatalf("lock %s: %v", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	mb := minbase{image: filepath.Join(dir, "rootfs.ext4"), initrd: filepath.Join(dir, "initrd.img")}
	metaFile := filepath.Join(dir, "meta.json")
	var meta minbaseMeta
	if mj, err := os.ReadFile(metaFile); err == nil && json.Unmarshal(mj, &meta) == nil {
		rep.printf("minbase image cached in %s", dir)
	} else {
		meta = buildMinbase(b, rep, dir, spec.Suite, mirror)
		mj, _ := json.MarshalIndent(meta, "", "  ")
		if err := os.WriteFile(metaFile, mj, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	mb.kernelVersion, mb.size = meta.KernelVersion, meta.Size
	want := strings.TrimPrefix(filepath.Base(kernel), "vmlinuz-")
	if mb.kernelVersion != want {
		b.Fatalf("the minbase image's kernel is %s but DebVisor slot A's is %s (%s): both must boot the same kernel "+
			"file, which needs the same version's initrd and modules; the mirror moved on since one of them was built. "+
			"Remove %s (or the stale rootfs cache) to rebuild", mb.kernelVersion, want, kernel, dir)
	}
	return mb
}

// buildMinbase makes the plain image in dir: mmdebstrap into a temporary
// tree, its initrd copied out, the tree put into an ext4 filesystem with
// mkfs.ext4 -d.
func buildMinbase(b *testing.B, rep *bootReport, dir, suite, mirror string) minbaseMeta {
	b.Helper()
	if err := os.RemoveAll(dir); err != nil {
		b.Fatal(err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	tree := dir + ".tree"
	if err := os.RemoveAll(tree); err != nil {
		b.Fatal(err)
	}
	defer os.RemoveAll(tree)
	t0 := time.Now()
	args := []string{
		"--variant=minbase", "--mode=root", "--format=directory",
		`--aptopt=APT::Install-Recommends "false"`,
		"--include=" + strings.Join(minbasePackages, ","),
		suite, tree, mirror,
	}
	var out bytes.Buffer
	cmd := exec.Command("mmdebstrap", args...)
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		b.Fatalf("mmdebstrap %s: %v\n%s", strings.Join(args, " "), err, tail(out.String(), 4000))
	}
	rep.printf("minbase: mmdebstrap %s took %.1fs", strings.Join(args, " "), time.Since(t0).Seconds())

	// The root account must be locked or passwordless: the figure is the
	// prompt, nobody logs in.
	shadow, err := os.ReadFile(filepath.Join(tree, "etc/shadow"))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(shadow), "\n") {
		if f := strings.Split(l, ":"); len(f) > 1 && f[0] == "root" && f[1] != "" && f[1] != "*" && !strings.HasPrefix(f[1], "!") {
			b.Fatal("minbase root account has a password hash; want it empty or locked")
		}
	}
	kernels, _ := filepath.Glob(filepath.Join(tree, "boot/vmlinuz-*"))
	if len(kernels) != 1 {
		b.Fatalf("minbase tree has %d kernels in /boot (%v), want 1", len(kernels), kernels)
	}
	version := strings.TrimPrefix(filepath.Base(kernels[0]), "vmlinuz-")
	initrd, err := os.ReadFile(filepath.Join(tree, "boot/initrd.img-"+version))
	if err != nil {
		b.Fatalf("minbase initrd: %v", err)
	}
	if err := os.WriteFile(filepath.Join(dir, "initrd.img"), initrd, 0o644); err != nil {
		b.Fatal(err)
	}
	img := filepath.Join(dir, "rootfs.ext4")
	t0 = time.Now()
	run(b, "truncate", "-s", minbaseImageSize, img)
	run(b, "mkfs.ext4", "-q", "-F", "-L", "minbase", "-d", tree, img)
	rep.printf("minbase: mkfs.ext4 -d took %.1fs; kernel %s", time.Since(t0).Seconds(), version)
	return minbaseMeta{Suite: suite, Mirror: mirror, Packages: minbasePackages, KernelVersion: version, Size: minbaseImageSize}
}
