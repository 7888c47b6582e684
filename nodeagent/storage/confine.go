package storage

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"unicode/utf16"

	"golang.org/x/sys/unix"

	"github.com/debvisor/debvisor/nodeagent/fault"
	"github.com/debvisor/debvisor/osimage"
)

// Policy confines what a client's pool may touch on the node. Pools are
// the only way a client names host paths and devices, so every path and
// device is judged here, after resolving symlinks and "..", before libvirt
// sees it:
//
//   - directory-backed pools (dir, and the mount points of fs and netfs
//     pools) lie strictly inside one of Roots, which the admin configures
//     (storage.pool_roots; default the data partition's pool directory);
//   - no pool is at, inside, or above a Protected path (the agent's state
//     and PKI, /etc, /boot and the ESP, /root, system directories);
//   - device-backed pools (fs, logical, zfs) never use a device that holds
//     a mounted filesystem, swap, a device-mapper/RAID user, or a DebVisor
//     partition (the boot disk);
//   - a pool's directory must be new or empty: the agent never adopts files
//     it did not create, so deleting a pool's volumes or storage can only
//     remove what the agent made.
type Policy struct {
	// Roots are the directories pool paths must lie inside.
	Roots []string
	// Protected paths: no pool at, inside or above one of them.
	Protected []string
	// DevRoot is where block devices live ("/dev"); tests keep the default.
	DevRoot string
}

// SystemProtected are the node's own directories no pool may touch. The
// caller adds the agent's state dir and the PKI files' directories.
var SystemProtected = []string{
	"/etc", "/boot", osimage.ESPMount, "/root", "/usr", "/bin", "/sbin",
	"/lib", "/lib32", "/lib64", "/libx32", "/proc", "/sys", "/dev", "/run",
	"/var/lib/libvirt", "/var/lib/dpkg", "/var/log", osimage.OverlayDir,
}

// systemAncestors are directories a pool may lie below (when a root
// allows) but never be: a pool there would hold the whole system tree.
var systemAncestors = []string{"/", "/var", "/var/lib", "/home", "/srv", "/opt", "/tmp", "/mnt", "/media", osimage.DataMount}

// DefaultPoolRoot is where pools live on a DebVisor node: a directory on
// the data partition.
const DefaultPoolRoot = osimage.DataMount + "/pools"

// resolve returns p with every symlink in its existing prefix resolved and
// the rest appended: a directory that does not exist yet cannot be a link,
// and a link further up cannot lead out of a root unnoticed.
func resolve(p string) (string, error) {
	if !filepath.IsAbs(p) {
		return "", fmt.Errorf("%q is not absolute", p)
	}
	p = filepath.Clean(p)
	var rest []string
	for cur := p; ; cur = filepath.Dir(cur) {
		r, err := filepath.EvalSymlinks(cur)
		if err == nil {
			return filepath.Join(append([]string{r}, rest...)...), nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("resolve %s: %w", cur, err)
		}
		if cur == "/" {
			return p, nil
		}
		rest = append([]string{filepath.Base(cur)}, rest...)
	}
}

// within reports whether p is dir or below it (both clean).
func within(p, dir string) bool {
	if dir == "/" {
		return true
	}
	return p == dir || strings.HasPrefix(p, dir+"/")
}

func (pol Policy) resolvedList(list []string) []string {
	out := make([]string, 0, len(list))
	for _, d := range list {
		if r, err := resolve(d); err == nil {
			out = append(out, r)
		}
		out = append(out, filepath.Clean(d))
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// CheckPath judges a pool's directory. field names it in errors.
func (pol Policy) CheckPath(field, p string) error {
	if !filepath.IsAbs(p) || filepath.Clean(p) != p {
		return Invalid(field, "%q must be a clean absolute path", p)
	}
	r, err := resolve(p)
	if err != nil {
		return Invalid(field, "%v", err)
	}
	shown := p
	if r != p {
		shown = fmt.Sprintf("%s (resolves to %s)", p, r)
	}
	for _, a := range systemAncestors {
		if r == a {
			return Invalid(field, "%s is a system directory: pools live in a directory of their own under a permitted root", shown)
		}
	}
	for _, prot := range pol.resolvedList(pol.Protected) {
		switch {
		case within(r, prot):
			return Invalid(field, "%s is inside %s, which pools may never touch (system, agent state or PKI)", shown, prot)
		case within(prot, r):
			return Invalid(field, "%s would contain %s, which pools may never touch (system, agent state or PKI)", shown, prot)
		}
	}
	roots := pol.resolvedList(pol.Roots)
	for _, root := range roots {
		if r != root && within(r, root) {
			return nil
		}
	}
	if len(roots) == 0 {
		return Invalid(field, "no pool roots are configured on this node (storage.pool_roots in the agent config): directory pools are refused")
	}
	return Invalid(field, "%s is not inside a permitted pool root (%s); the admin sets them in storage.pool_roots", shown, strings.Join(pol.Roots, ", "))
}

// CheckEmptyDir refuses an existing directory that holds anything: the
// agent makes pools in new or empty directories only.
func CheckEmptyDir(field, p string) error {
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fault.Errorf(fault.FailedPrecondition, "%s: %v", field, err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return fault.Errorf(fault.FailedPrecondition, "%s: %v", field, err)
	}
	if !st.IsDir() {
		return Invalid(field, "%s exists and is not a directory", p)
	}
	names, err := f.Readdirnames(1)
	if err != nil && !errors.Is(err, io.EOF) {
		return fault.Errorf(fault.FailedPrecondition, "%s: read %s: %v", field, p, err)
	}
	if len(names) > 0 {
		return fault.Errorf(fault.FailedPrecondition, "%s: %s already holds files (e.g. %q) the agent did not create; pools are made in new or empty directories only", field, p, names[0])
	}
	return nil
}

// CheckDevice judges a block device for a device-backed pool.
func (pol Policy) CheckDevice(field, dev string) error {
	devRoot := pol.DevRoot
	if devRoot == "" {
		devRoot = "/dev"
	}
	if !filepath.IsAbs(dev) || filepath.Clean(dev) != dev {
		return Invalid(field, "%q must be a clean absolute device path", dev)
	}
	r, err := filepath.EvalSymlinks(dev)
	if err != nil {
		return Invalid(field, "%s: %v", dev, err)
	}
	shown := dev
	if r != dev {
		shown = fmt.Sprintf("%s (resolves to %s)", dev, r)
	}
	if !within(r, devRoot) {
		return Invalid(field, "%s is not a device under %s", shown, devRoot)
	}
	var st unix.Stat_t
	if err := unix.Stat(r, &st); err != nil {
		return Invalid(field, "%s: %v", shown, err)
	}
	if st.Mode&unix.S_IFMT != unix.S_IFBLK {
		return Invalid(field, "%s is not a block device", shown)
	}
	disk, members, err := diskOf(st.Rdev)
	if err != nil {
		return fault.Errorf(fault.FailedPrecondition, "%s: %s: %v", field, shown, err)
	}
	mounted, err := mountedDevices()
	if err != nil {
		return fault.Errorf(fault.FailedPrecondition, "%s: %v", field, err)
	}
	for _, m := range members {
		if why, ok := mounted[m.dev]; ok {
			return fault.Errorf(fault.FailedPrecondition, "%s: %s holds a mounted filesystem or swap (%s on %s): pools never use a device in use", field, shown, m.name, why)
		}
		if m.holders {
			return fault.Errorf(fault.FailedPrecondition, "%s: %s is in use by device-mapper or RAID (%s has holders): pools never use a device in use", field, shown, m.name)
		}
	}
	names, err := partitionNames(filepath.Join(devRoot, disk))
	if err != nil {
		return fault.Errorf(fault.FailedPrecondition, "%s: read the partition table of %s: %v", field, disk, err)
	}
	for _, n := range names {
		if strings.HasPrefix(n, "debvisor-") {
			return fault.Errorf(fault.FailedPrecondition, "%s: %s is on a disk that holds the DebVisor partition %q (the boot disk): pools never use it", field, shown, n)
		}
	}
	return nil
}

type blockMember struct {
	name    string
	dev     uint64
	holders bool
}

// diskOf returns the whole disk of a block device (its sysfs name) and the
// disk with all its partitions.
func diskOf(rdev uint64) (string, []blockMember, error) {
	sys, err := filepath.EvalSymlinks(fmt.Sprintf("/sys/dev/block/%d:%d", unix.Major(rdev), unix.Minor(rdev)))
	if err != nil {
		return "", nil, fmt.Errorf("sysfs entry: %w", err)
	}
	if _, err := os.Stat(filepath.Join(sys, "partition")); err == nil {
		sys = filepath.Dir(sys)
	}
	disk := filepath.Base(sys)
	members := []blockMember{member(sys)}
	entries, err := os.ReadDir(sys)
	if err != nil {
		return "", nil, err
	}
	for _, e := range entries {
		if _, err := os.Stat(filepath.Join(sys, e.Name(), "partition")); err == nil {
			members = append(members, member(filepath.Join(sys, e.Name())))
		}
	}
	return disk, members, nil
}

func member(sys string) blockMember {
	m := blockMember{name: filepath.Base(sys)}
	if b, err := os.ReadFile(filepath.Join(sys, "dev")); err == nil {
		var maj, minor uint32
		if _, err := fmt.Sscanf(strings.TrimSpace(string(b)), "%d:%d", &maj, &minor); err == nil {
			m.dev = unix.Mkdev(maj, minor)
		}
	}
	if h, err := os.ReadDir(filepath.Join(sys, "holders")); err == nil && len(h) > 0 {
		m.holders = true
	}
	return m
}

// mountedDevices maps device numbers to a mount point (or "swap").
func mountedDevices() (map[uint64]string, error) {
	out := map[uint64]string{}
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 {
			continue
		}
		var maj, minor uint32
		if _, err := fmt.Sscanf(fields[2], "%d:%d", &maj, &minor); err == nil && maj != 0 {
			out[unix.Mkdev(maj, minor)] = fields[4]
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("mountinfo: %w", err)
	}
	if b, err := os.ReadFile("/proc/swaps"); err == nil {
		for _, line := range strings.Split(string(b), "\n")[1:] {
			fields := strings.Fields(line)
			if len(fields) == 0 {
				continue
			}
			var st unix.Stat_t
			if unix.Stat(fields[0], &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFBLK {
				out[st.Rdev] = "swap"
			}
		}
	}
	return out, nil
}

// partitionNames reads the GPT partition names of a disk, read-only. A
// disk without a GPT has none. It reads the table itself rather than
// relying on the kernel's partition scan (absent for loop devices here)
// or on udev.
func partitionNames(disk string) ([]string, error) {
	f, err := os.Open(disk)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	for _, sector := range []int64{512, 4096} {
		names, ok, err := readGPTNames(f, sector)
		if err != nil || ok {
			return names, err
		}
	}
	return nil, nil
}

// readGPTNames parses the primary GPT header at LBA 1 for a sector size;
// ok is false when there is no GPT signature there.
func readGPTNames(r io.ReaderAt, sector int64) (names []string, ok bool, err error) {
	hdr := make([]byte, 92)
	if _, err := r.ReadAt(hdr, sector); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, false, nil
		}
		return nil, false, err
	}
	if string(hdr[:8]) != "EFI PART" {
		return nil, false, nil
	}
	entriesLBA := int64(binary.LittleEndian.Uint64(hdr[72:]))
	count := binary.LittleEndian.Uint32(hdr[80:])
	size := binary.LittleEndian.Uint32(hdr[84:])
	if size < 128 || size > 4096 || count > 1024 || entriesLBA < 2 {
		return nil, true, fmt.Errorf("implausible GPT header (%d entries of %d bytes at LBA %d)", count, size, entriesLBA)
	}
	buf := make([]byte, int64(count)*int64(size))
	if _, err := r.ReadAt(buf, entriesLBA*sector); err != nil && !errors.Is(err, io.EOF) {
		return nil, true, err
	}
	for i := range int(count) {
		e := buf[i*int(size) : (i+1)*int(size)]
		if allZero(e[:16]) { // unused entry: no type GUID
			continue
		}
		u := make([]uint16, 36)
		for j := range u {
			u[j] = binary.LittleEndian.Uint16(e[56+2*j:])
		}
		n := len(u)
		for n > 0 && u[n-1] == 0 {
			n--
		}
		names = append(names, string(utf16.Decode(u[:n])))
	}
	return names, true, nil
}

func allZero(b []byte) bool {
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}
