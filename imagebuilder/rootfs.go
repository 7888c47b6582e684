package imagebuilder

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/debvisor/debvisor/templates"
)

// rootfsFormat changes whenever the way the cached tree is made changes, so
// old cache entries are not reused by mistake.
const rootfsFormat = "debvisor-rootfs-v2"

// DefaultCacheDir is where rootfs trees are cached unless DEBVISOR_CACHE or
// WithCacheDir says otherwise. It is outside any checkout on purpose: CI
// clones are fresh, the cache is not.
const DefaultCacheDir = "/var/cache/debvisor"

// CacheDirFromEnv returns $DEBVISOR_CACHE or DefaultCacheDir.
func CacheDirFromEnv() string {
	if d := os.Getenv("DEBVISOR_CACHE"); d != "" {
		return d
	}
	return DefaultCacheDir
}

// rootfsMeta is stored beside a cached tree.
type rootfsMeta struct {
	Key      string   `json:"key"`
	Suite    string   `json:"suite"`
	Mirror   string   `json:"mirror"`
	Packages []string `json:"packages"`
	// Created is when the tree was made; it is the default SOURCE_DATE_EPOCH
	// of images built from it, so rebuilds from one cache are identical.
	Created int64 `json:"created"`
}

// HostMirror returns the first Debian mirror apt on this machine uses
// (deb822 .sources or one-line sources.list), skipping security mirrors.
func HostMirror(root string) (string, error) {
	var files []string
	d := filepath.Join(root, "etc/apt/sources.list.d")
	if ents, err := os.ReadDir(d); err == nil {
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".sources") || strings.HasSuffix(e.Name(), ".list") {
				files = append(files, filepath.Join(d, e.Name()))
			}
		}
	}
	files = append([]string{filepath.Join(root, "etc/apt/sources.list")}, files...)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if u := mirrorFrom(string(b), strings.HasSuffix(f, ".sources")); u != "" {
			return u, nil
		}
	}
	return "", errors.New("no Debian mirror found in apt's sources; set mirror in the spec")
}

func mirrorFrom(text string, deb822 bool) string {
	sc := bufio.NewScanner(strings.NewReader(text))
	isDeb := false
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			isDeb = false
			continue
		}
		if strings.HasPrefix(line, "#") {
			continue
		}
		if deb822 {
			k, v, _ := strings.Cut(line, ":")
			switch strings.ToLower(k) {
			case "types":
				isDeb = strings.Contains(" "+v+" ", " deb ")
			case "uris":
				for _, u := range strings.Fields(v) {
					if isDeb && !strings.Contains(u, "security") {
						return strings.TrimSuffix(u, "/")
					}
				}
			}
			continue
		}
		f := strings.Fields(line)
		if len(f) >= 3 && f[0] == "deb" {
			for _, u := range f[1:] {
				if strings.HasPrefix(u, "[") || strings.HasSuffix(u, "]") || strings.Contains(u, "=") {
					continue
				}
				if !strings.Contains(u, "security") {
					return strings.TrimSuffix(u, "/")
				}
				break
			}
		}
	}
	return ""
}

// checkMirror fails fast and clearly when the mirror cannot serve the
// suite, instead of letting mmdebstrap fail minutes later.
func checkMirror(ctx context.Context, mirror, suite string) error {
	if strings.HasPrefix(mirror, "file://") {
		p := strings.TrimPrefix(mirror, "file://") + "/dists/" + suite + "/Release"
		if _, err := os.Stat(p); err != nil {
			return fmt.Errorf("mirror %s has no suite %q: %w", mirror, suite, err)
		}
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	u := mirror + "/dists/" + suite + "/Release"
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, u, nil)
	if err != nil {
		return fmt.Errorf("mirror %s: %w", mirror, err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("mirror %s is unreachable: %w", mirror, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("mirror %s has no suite %q: GET %s: %s", mirror, suite, u, resp.Status)
	}
	return nil
}

// rootfsKey hashes everything that determines the cached tree.
func rootfsKey(suite, mirror string, pkgs []string) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "%s\nsuite=%s\nmirror=%s\npackages=%s\n", rootfsFormat, suite, mirror, strings.Join(pkgs, ","))
	if out, err := exec.Command("mmdebstrap", "--version").Output(); err == nil {
		fmt.Fprintf(h, "mmdebstrap=%s", bytes.TrimSpace(out))
	}
	// The initramfs is generated inside the cached tree, so the hook is an
	// input.
	err := fs.WalkDir(templates.FS, "initramfs", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := templates.FS.ReadFile(p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "\x00%s\x00", p)
		h.Write(b)
		return nil
	})
	if err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:32], nil
}

// ensureRootfs returns a cached tree for the package set, building it with
// mmdebstrap when absent. Concurrent builders of the same key wait for each
// other on a lock file.
func (b *builder) ensureRootfs(ctx context.Context) (dir string, meta rootfsMeta, cached bool, err error) {
	mirror := b.spec.Mirror
	if mirror == "" {
		if mirror, err = HostMirror("/"); err != nil {
			return "", meta, false, err
		}
	}
	pkgs := b.spec.AllPackages()
	key, err := rootfsKey(b.spec.Suite, mirror, pkgs)
	if err != nil {
		return "", meta, false, fmt.Errorf("rootfs key: %w", err)
	}
	base := filepath.Join(b.opts.cacheDir, "rootfs")
	if err := os.MkdirAll(base, 0o755); err != nil {
		return "", meta, false, fmt.Errorf("cache dir: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(base, key+".lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", meta, false, err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", meta, false, fmt.Errorf("lock rootfs cache: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck

	dir = filepath.Join(base, key)
	metaFile := dir + ".json"
	if mb, err := os.ReadFile(metaFile); err == nil && json.Unmarshal(mb, &meta) == nil {
		if _, err := os.Stat(filepath.Join(dir, "usr/bin")); err == nil {
			return dir, meta, true, nil
		}
	}
	if err := checkMirror(ctx, mirror, b.spec.Suite); err != nil {
		return "", meta, false, err
	}
	tmp := dir + ".tmp"
	if err := os.RemoveAll(tmp); err != nil {
		return "", meta, false, err
	}
	defer os.RemoveAll(tmp)
	if err := b.mmdebstrap(ctx, tmp, mirror, pkgs); err != nil {
		return "", meta, false, err
	}
	_ = os.RemoveAll(dir)
	if err := os.Rename(tmp, dir); err != nil {
		return "", meta, false, fmt.Errorf("cache rootfs: %w", err)
	}
	meta = rootfsMeta{Key: key, Suite: b.spec.Suite, Mirror: mirror, Packages: pkgs, Created: time.Now().Unix()}
	if e := os.Getenv("SOURCE_DATE_EPOCH"); e != "" {
		fmt.Sscan(e, &meta.Created) //nolint:errcheck
	}
	mb, _ := json.MarshalIndent(meta, "", "  ")
	if err := os.WriteFile(metaFile, mb, 0o644); err != nil {
		return "", meta, false, fmt.Errorf("cache rootfs: %w", err)
	}
	return dir, meta, false, nil
}

func (b *builder) mmdebstrap(ctx context.Context, target, mirror string, pkgs []string) error {
	// The initramfs hook and module list go in before the kernel package
	// is configured, and the initramfs is regenerated at the end, so the
	// cached tree already boots the DebVisor way.
	hookDir, err := os.MkdirTemp("", "debvisor-initramfs-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(hookDir)
	err = fs.WalkDir(templates.FS, "initramfs", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		dst := filepath.Join(hookDir, strings.TrimPrefix(p, "initramfs"))
		if d.IsDir() {
			return os.MkdirAll(dst, 0o755)
		}
		data, err := templates.FS.ReadFile(p)
		if err != nil {
			return err
		}
		mode := os.FileMode(0o644)
		if templates.Executables[p] {
			mode = 0o755
		}
		return os.WriteFile(dst, data, mode)
	})
	if err != nil {
		return fmt.Errorf("stage initramfs hook: %w", err)
	}
	args := []string{
		"--variant=minbase",
		"--mode=root",
		"--format=directory",
		"--aptopt=APT::Install-Recommends \"false\"",
		"--include=" + strings.Join(pkgs, ","),
		`--essential-hook=mkdir -p "$1/etc/initramfs-tools" && printf "squashfs\noverlay\next4\n" >> "$1/etc/initramfs-tools/modules"`,
		fmt.Sprintf(`--customize-hook=cp -r %s/. "$1/etc/initramfs-tools/"`, hookDir),
		`--customize-hook=chroot "$1" update-initramfs -u -k all`,
		b.spec.Suite, target, mirror,
	}
	cmd := exec.CommandContext(ctx, "mmdebstrap", args...)
	// mmdebstrap makes a bit-identical tree for the same packages when
	// SOURCE_DATE_EPOCH is set (it clamps times and drops logs and caches
	// that record the moment). A constant, not the build's epoch: the tree
	// is cached across builds.
	cmd.Env = append(withoutEnv(os.Environ(), "SOURCE_DATE_EPOCH"), fmt.Sprintf("SOURCE_DATE_EPOCH=%d", BaseEpoch))
	// One writer for both streams: exec then serialises the writes (a
	// bytes.Buffer as Stdout is filled with ReadFrom, which would drop what
	// another goroutine wrote to it meanwhile).
	var out bytes.Buffer
	lt := &logTail{w: &out, log: b.log, prefix: "mmdebstrap"}
	cmd.Stdout, cmd.Stderr = lt, lt
	b.log.Debug("running mmdebstrap", slog.Any("args", args))
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("mmdebstrap %s from %s failed (%w):\n%s", b.spec.Suite, mirror, err, explainApt(out.String()))
	}
	return nil
}

// explainApt pulls the lines that say what went wrong out of apt's and
// mmdebstrap's output.
func explainApt(out string) string {
	var keep []string
	for _, l := range strings.Split(out, "\n") {
		if strings.HasPrefix(l, "E:") || strings.Contains(l, "Unable to locate package") || strings.HasPrefix(l, "W:") && strings.Contains(l, "Failed") {
			keep = append(keep, l)
		}
	}
	if len(keep) == 0 {
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) > 15 {
			lines = lines[len(lines)-15:]
		}
		keep = lines
	}
	return strings.Join(keep, "\n")
}

// logTail forwards a tool's lines to the debug log while keeping them.
type logTail struct {
	w      *bytes.Buffer
	log    *slog.Logger
	prefix string
	part   []byte
}

func (l *logTail) Write(p []byte) (int, error) {
	l.w.Write(p)
	l.part = append(l.part, p...)
	for {
		i := bytes.IndexByte(l.part, '\n')
		if i < 0 {
			break
		}
		l.log.Debug(l.prefix, slog.String("line", string(l.part[:i])))
		l.part = l.part[i+1:]
	}
	return len(p), nil
}
