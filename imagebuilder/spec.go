// Package imagebuilder turns a declarative spec into a bootable A/B DebVisor
// disk image: a cached Debian rootfs, the DebVisor overlay from templates/,
// a reproducible squashfs slot, a GPT disk with a GRUB ESP, and raw/qcow2
// outputs with a manifest. It also inspects built images. It never imports
// nodeagent; the contracts both sides share live in osimage.
package imagebuilder

import (
	"bytes"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"

	"github.com/debvisor/debvisor/api/rules"
	"github.com/debvisor/debvisor/osimage"
)

// DefaultSpecYAML is the spec `debvisor-image build` uses without a SPEC
// argument; examples/images/default.yaml is a copy (a test keeps them equal).
//
//go:embed default.yaml
var DefaultSpecYAML []byte

// RequiredPackages are installed whatever the spec says: the units, the
// initramfs hook and firstboot need them.
var RequiredPackages = []string{
	"ca-certificates", "cloud-guest-utils", "dbus", "e2fsprogs", "fdisk",
	"initramfs-tools", "iproute2", "kmod", "kmscon", "linux-image-amd64",
	"openssh-server", "systemd", "systemd-sysv", "udev", "util-linux",
	// The hypervisor: libvirtd with its QEMU driver, QEMU/KVM, UEFI
	// firmware for guests, qemu-img, and virsh for the operator at the
	// console.
	"libvirt-daemon-system", "libvirt-daemon-driver-qemu", "libvirt-clients",
	"qemu-system-x86", "qemu-utils", "ovmf",
	// The first tool of whoever debugs a node's network at its console.
	"iputils-ping",
}

// Size is a byte count written in specs as "512MiB", "1GiB", "1G" (binary
// units) or a plain number of bytes.
type Size int64

const (
	MiB Size = 1 << 20
	GiB Size = 1 << 30
)

// ParseSize parses a Size with the API's size rules (rules.ParseSize):
// "512MiB", "1GiB", "1G" or a plain number of bytes. A spec lays out a
// disk, so fractions ("1.5GiB") are refused rather than rounded.
func ParseSize(s string) (Size, error) {
	if strings.Contains(s, ".") {
		return 0, fmt.Errorf("%q: sizes in a spec are whole numbers (e.g. 1536MiB, not 1.5GiB)", s)
	}
	n, err := rules.ParseSize(s)
	if err != nil {
		return 0, err
	}
	return Size(n), nil
}

func (s Size) String() string { return rules.FormatSize(int64(s)) }

// UnmarshalYAML accepts strings and integers.
func (s *Size) UnmarshalYAML(b []byte) error {
	str := strings.Trim(strings.TrimSpace(string(b)), `"'`)
	v, err := ParseSize(str)
	if err != nil {
		return &sizeError{raw: str, err: err}
	}
	*s = v
	return nil
}

// sizeError lets ParseSpec put a line and field on a bad size: go-yaml
// does not locate errors returned by custom unmarshalers.
type sizeError struct {
	raw string
	err error
}

func (e *sizeError) Error() string { return e.err.Error() }

// MarshalJSON renders the human form (the digest uses JSON).
func (s Size) MarshalJSON() ([]byte, error) { return json.Marshal(s.String()) }

// Spec is an image specification.
type Spec struct {
	Version       string      `yaml:"version" json:"version"`
	Suite         string      `yaml:"suite" json:"suite"`
	Mirror        string      `yaml:"mirror" json:"mirror"`
	Packages      []string    `yaml:"packages" json:"packages"`
	Hostname      string      `yaml:"hostname" json:"hostname"`
	Users         []User      `yaml:"users" json:"users"`
	KernelCmdline string      `yaml:"kernel_cmdline" json:"kernel_cmdline"`
	BootTimeout   int         `yaml:"boot_timeout" json:"boot_timeout"`
	SlotSize      Size        `yaml:"slot_size" json:"slot_size"`
	ESPSize       Size        `yaml:"esp_size" json:"esp_size"`
	DataSize      Size        `yaml:"data_size" json:"data_size"`
	Compression   string      `yaml:"compression" json:"compression"`
	Preseed       string      `yaml:"preseed" json:"preseed"`
	ExtraFiles    []ExtraFile `yaml:"extra_files" json:"extra_files"`

	// dir resolves relative paths (preseed, extra file sources): the spec
	// file's directory.
	dir string
}

// User is an account to create (or, for root, to give SSH keys).
type User struct {
	Name              string   `yaml:"name" json:"name"`
	Groups            []string `yaml:"groups" json:"groups,omitempty"`
	Shell             string   `yaml:"shell" json:"shell,omitempty"`
	SSHAuthorizedKeys []string `yaml:"ssh_authorized_keys" json:"ssh_authorized_keys"`
}

// ExtraFile is a file added to the image.
type ExtraFile struct {
	Path    string `yaml:"path" json:"path"`
	Mode    string `yaml:"mode" json:"mode,omitempty"`
	Content string `yaml:"content" json:"content,omitempty"`
	Source  string `yaml:"source" json:"source,omitempty"`
}

// SpecError is a spec problem located in the source.
type SpecError struct {
	Line  int
	Field string
	Msg   string
}

func (e *SpecError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", e.Line, e.Field, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Field, e.Msg)
}

// DefaultSpec returns the embedded default spec.
func DefaultSpec() (*Spec, error) {
	s, err := ParseSpec(DefaultSpecYAML, "")
	if err != nil {
		return nil, fmt.Errorf("embedded default spec: %w", err)
	}
	return s, nil
}

// LoadSpec reads a spec file; relative paths inside it are relative to it.
func LoadSpec(file string) (*Spec, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("read spec: %w", err)
	}
	dir, err := filepath.Abs(filepath.Dir(file))
	if err != nil {
		return nil, err
	}
	s, err := ParseSpec(b, dir)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", file, err)
	}
	return s, nil
}

// ParseSpec parses a spec over the embedded defaults, refusing unknown keys,
// and validates it. Errors name the line and the field.
func ParseSpec(data []byte, dir string) (*Spec, error) {
	var s Spec
	if err := yaml.NewDecoder(bytes.NewReader(DefaultSpecYAML), yaml.DisallowUnknownField()).Decode(&s); err != nil {
		return nil, fmt.Errorf("embedded default spec: %w", err)
	}
	s.dir = dir
	if len(bytes.TrimSpace(data)) > 0 {
		dec := yaml.NewDecoder(bytes.NewReader(data), yaml.DisallowUnknownField(), yaml.Strict())
		if err := dec.Decode(&s); err != nil {
			var se *sizeError
			if errors.As(err, &se) {
				file, _ := parser.ParseBytes(data, 0)
				for _, field := range []string{"slot_size", "esp_size", "data_size"} {
					if line := lineOf(file, field); line > 0 && nodeValue(file, field) == se.raw {
						return nil, &SpecError{Line: line, Field: field, Msg: se.Error()}
					}
				}
				return nil, se
			}
			return nil, errors.New(yaml.FormatError(err, false, true))
		}
	}
	var file *ast.File
	if f, err := parser.ParseBytes(data, 0); err == nil {
		file = f
	}
	if errs := s.validate(); len(errs) > 0 {
		for _, e := range errs {
			e.Line = lineOf(file, e.Field)
		}
		joined := make([]error, len(errs))
		for i, e := range errs {
			joined[i] = e
		}
		return nil, errors.Join(joined...)
	}
	return &s, nil
}

// lineOf finds the line of a field path such as "users[1].name" in the
// user's YAML; 0 when the field came from the defaults.
func lineOf(file *ast.File, field string) int {
	if file == nil {
		return 0
	}
	for f := field; f != ""; {
		p, err := yaml.PathString("$." + f)
		if err == nil {
			if n, err := p.FilterFile(file); err == nil && n != nil {
				return n.GetToken().Position.Line
			}
		}
		// Fall back to the enclosing field.
		i := strings.LastIndexAny(f, ".[")
		if i < 0 {
			break
		}
		f = f[:i]
	}
	return 0
}

// nodeValue returns the scalar text at a field path.
func nodeValue(file *ast.File, field string) string {
	p, err := yaml.PathString("$." + field)
	if err != nil || file == nil {
		return ""
	}
	n, err := p.FilterFile(file)
	if err != nil || n == nil {
		return ""
	}
	return strings.Trim(strings.TrimSpace(n.String()), `"'`)
}

var (
	debNameRE  = regexp.MustCompile(`^[a-z0-9][a-z0-9+.-]+$`)
	userNameRE = regexp.MustCompile(`^[a-z_][a-z0-9_-]{0,31}$`)
	suiteRE    = regexp.MustCompile(`^[a-z][a-z0-9-]*$`)
)

// Limits the layout imposes.
const (
	minSlot = 256 * MiB
	minESP  = 40 * MiB
	maxESP  = 1 * GiB
	minData = 64 * MiB
)

func (s *Spec) validate() []*SpecError {
	var errs []*SpecError
	bad := func(field, format string, a ...any) {
		errs = append(errs, &SpecError{Field: field, Msg: fmt.Sprintf(format, a...)})
	}
	if !suiteRE.MatchString(s.Suite) {
		bad("suite", "%q is not a Debian suite name", s.Suite)
	}
	if s.Mirror != "" {
		u, err := url.Parse(s.Mirror)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https" && u.Scheme != "file") || (u.Scheme != "file" && u.Host == "") {
			bad("mirror", "%q is not an http(s):// or file:// URL", s.Mirror)
		}
	}
	seen := map[string]bool{}
	for i, p := range s.Packages {
		if !debNameRE.MatchString(p) {
			bad(fmt.Sprintf("packages[%d]", i), "%q is not a Debian package name", p)
		}
		if seen[p] {
			bad(fmt.Sprintf("packages[%d]", i), "%q is listed twice", p)
		}
		seen[p] = true
	}
	if s.Hostname != "" {
		if err := rules.CheckHostname(s.Hostname); err != nil {
			bad("hostname", "%v", err)
		}
	}
	users := map[string]bool{}
	for i, u := range s.Users {
		f := fmt.Sprintf("users[%d]", i)
		if !userNameRE.MatchString(u.Name) {
			bad(f+".name", "%q is not a valid user name", u.Name)
		}
		if users[u.Name] {
			bad(f+".name", "user %q is listed twice", u.Name)
		}
		users[u.Name] = true
		if u.Shell != "" && !path.IsAbs(u.Shell) {
			bad(f+".shell", "%q must be an absolute path", u.Shell)
		}
		for j, k := range u.SSHAuthorizedKeys {
			if !strings.HasPrefix(k, "ssh-") && !strings.HasPrefix(k, "ecdsa-") && !strings.HasPrefix(k, "sk-") {
				bad(fmt.Sprintf("%s.ssh_authorized_keys[%d]", f, j), "not an OpenSSH public key")
			}
		}
	}
	if strings.ContainsAny(s.KernelCmdline, "\n;$`\"'{}") {
		bad("kernel_cmdline", "must be one line without quotes, braces, ';' or '$' (GRUB would interpret them)")
	}
	for _, k := range []string{"root=", "rootfstype=", osimage.CmdlineSlot + "="} {
		if _, ok := osimage.CmdlineValue(s.KernelCmdline, strings.TrimSuffix(k, "=")); ok {
			bad("kernel_cmdline", "must not set %q: the boot loader sets it per slot", k)
		}
	}
	if s.BootTimeout < 0 || s.BootTimeout > 60 {
		bad("boot_timeout", "%d is outside 0..60 seconds", s.BootTimeout)
	}
	checkSize := func(field string, v, min, max Size) {
		switch {
		case v%MiB != 0:
			bad(field, "%d bytes is not a whole number of MiB", v)
		case v < min:
			bad(field, "%s is smaller than the minimum %s", v, min)
		case max > 0 && v > max:
			bad(field, "%s is larger than the maximum %s", v, max)
		}
	}
	checkSize("slot_size", s.SlotSize, minSlot, 64*GiB)
	checkSize("esp_size", s.ESPSize, minESP, maxESP)
	checkSize("data_size", s.DataSize, minData, 1<<40)
	if s.ESPSize%MiB == 0 && s.ESPSize >= minESP && !espSizeOK(s.ESPSize) {
		bad("esp_size", "%s hits go-diskfs' FAT32 sizing bug (fsck.vfat rejects it); pick another size, e.g. 100MiB", s.ESPSize)
	}
	switch s.Compression {
	case "xz", "gzip":
	case "zstd", "lz4", "lzo":
		bad("compression", "%q: GRUB 2.06 cannot read %s squashfs; use xz or gzip", s.Compression, s.Compression)
	default:
		bad("compression", "%q is not supported (want xz or gzip)", s.Compression)
	}
	if s.Preseed != "" {
		if _, err := os.Stat(s.resolve(s.Preseed)); err != nil {
			bad("preseed", "%v", err)
		}
	}
	paths := map[string]bool{}
	for i, f := range s.ExtraFiles {
		field := fmt.Sprintf("extra_files[%d]", i)
		if !path.IsAbs(f.Path) || path.Clean(f.Path) != f.Path || f.Path == "/" {
			bad(field+".path", "%q must be a clean absolute path", f.Path)
		}
		if paths[f.Path] {
			bad(field+".path", "%q is listed twice", f.Path)
		}
		paths[f.Path] = true
		if (f.Content == "") == (f.Source == "") {
			bad(field, "set exactly one of content and source")
		}
		if f.Source != "" {
			if _, err := os.Stat(s.resolve(f.Source)); err != nil {
				bad(field+".source", "%v", err)
			}
		}
		if f.Mode != "" {
			if m, err := strconv.ParseUint(f.Mode, 8, 32); err != nil || m > 0o7777 {
				bad(field+".mode", "%q is not an octal permission like 0644", f.Mode)
			}
		}
	}
	return errs
}

// espSizeOK reports whether go-diskfs formats a FAT32 of this size that
// fsck.vfat accepts. go-diskfs v1.9.4 sizes the FAT two entries short at
// some sizes (docs/architecture.md, "go-diskfs"); the rule below reproduces its arithmetic and is
// checked against fsck.vfat by TestESPSizes.
func espSizeOK(size Size) bool {
	for _, b := range badESPSizesMiB {
		if size == Size(b)*MiB {
			return false
		}
	}
	return true
}

// badESPSizesMiB are sizes (in MiB, within the allowed ESP range) where
// go-diskfs' FAT32 fails fsck.vfat; measured by TestESPSizes.
var badESPSizesMiB = []int64{64, 129, 194, 259, 505, 506, 507, 762, 763}

func (s *Spec) resolve(p string) string {
	if filepath.IsAbs(p) || s.dir == "" {
		return p
	}
	return filepath.Join(s.dir, p)
}

// AllPackages returns the sorted package set: required plus the spec's.
func (s *Spec) AllPackages() []string {
	set := map[string]bool{}
	for _, p := range RequiredPackages {
		set[p] = true
	}
	for _, p := range s.Packages {
		set[p] = true
	}
	out := make([]string, 0, len(set))
	for p := range set {
		out = append(out, p)
	}
	sort.Strings(out)
	return out
}

// Digest returns "sha256:<hex>" over the spec's canonical JSON and the
// content of every file it references, so a changed preseed or extra file
// changes the digest (and the image's GUIDs).
func (s *Spec) Digest() (string, error) {
	h := sha256.New()
	canon, err := json.Marshal(s)
	if err != nil {
		return "", err
	}
	h.Write(canon)
	refs := []string{}
	if s.Preseed != "" {
		refs = append(refs, s.Preseed)
	}
	for _, f := range s.ExtraFiles {
		if f.Source != "" {
			refs = append(refs, f.Source)
		}
	}
	for _, r := range refs {
		b, err := os.ReadFile(s.resolve(r))
		if err != nil {
			return "", fmt.Errorf("spec digest: %w", err)
		}
		fmt.Fprintf(h, "\x00%s\x00%d\x00", r, len(b))
		h.Write(b)
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}
