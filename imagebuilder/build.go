package imagebuilder

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/debvisor/debvisor/osimage"
)

// Output file names inside the output directory.
const (
	RawName   = "debvisor.raw"
	QcowName  = "debvisor.qcow2"
	partialSf = ".partial"
)

// Option configures a build.
type Option func(*options) error

type options struct {
	log        *slog.Logger
	progress   *Progress
	cacheDir   string
	agentBin   string
	dvctlBin   string
	epoch      int64
	epochSet   bool
	qcow2      bool
	processors int
}

// WithLogger sets the structured logger (debug lines carry tool output).
func WithLogger(l *slog.Logger) Option {
	return func(o *options) error { o.log = l; return nil }
}

// WithProgress reports phases to p.
func WithProgress(p *Progress) Option {
	return func(o *options) error { o.progress = p; return nil }
}

// WithCacheDir sets where rootfs trees are cached.
func WithCacheDir(dir string) Option {
	return func(o *options) error {
		if dir == "" {
			return errors.New("empty cache dir")
		}
		o.cacheDir = dir
		return nil
	}
}

// WithBinaries names the debvisor-agent and dvctl binaries to bake in.
func WithBinaries(agent, dvctl string) Option {
	return func(o *options) error {
		for _, p := range []string{agent, dvctl} {
			if st, err := os.Stat(p); err != nil {
				return fmt.Errorf("binary to bake: %w", err)
			} else if st.Mode()&0o111 == 0 {
				return fmt.Errorf("binary to bake: %s is not executable", p)
			}
		}
		o.agentBin, o.dvctlBin = agent, dvctl
		return nil
	}
}

// WithSourceDateEpoch fixes every timestamp in the image. Without it the
// SOURCE_DATE_EPOCH environment variable is used, and without that the
// creation time of the cached rootfs.
func WithSourceDateEpoch(t int64) Option {
	return func(o *options) error { o.epoch, o.epochSet = t, true; return nil }
}

// WithQcow2 turns the qcow2 output on or off (default on).
func WithQcow2(on bool) Option {
	return func(o *options) error { o.qcow2 = on; return nil }
}

// WithProcessors limits mksquashfs' threads (default: all CPUs).
func WithProcessors(n int) Option {
	return func(o *options) error {
		if n < 1 {
			return fmt.Errorf("processors %d < 1", n)
		}
		o.processors = n
		return nil
	}
}

// Result describes a finished build.
type Result struct {
	Raw, Qcow2, ManifestPath string
	Manifest                 *osimage.Manifest
	RootfsCached             bool
	// BaseCached: the slot's compressed base came from the cache and only
	// the layer (DebVisor's own files) was compressed.
	BaseCached bool
}

type builder struct {
	spec   *Spec
	outDir string
	opts   options
	log    *slog.Logger

	digest   string
	epoch    int64
	kernel   string // kernel release baked into the slot (kernelLinks)
	work     string
	partials []string
	// baseBuild: tools run for the cached base get BaseEpoch, not the
	// build's epoch.
	baseBuild bool
}

// cmdEpoch is the SOURCE_DATE_EPOCH tools run with.
func (b *builder) cmdEpoch() int64 {
	if b.baseBuild {
		return BaseEpoch
	}
	return b.epoch
}

// Build runs the whole pipeline. On any error nothing is left in outDir
// but what was there before.
func Build(ctx context.Context, spec *Spec, outDir string, opts ...Option) (*Result, error) {
	o := options{log: slog.New(slog.NewTextHandler(io.Discard, nil)), cacheDir: CacheDirFromEnv(), qcow2: true, processors: runtime.NumCPU()}
	for _, opt := range opts {
		if err := opt(&o); err != nil {
			return nil, err
		}
	}
	if o.agentBin == "" {
		return nil, errors.New("no debvisor-agent/dvctl binaries to bake (WithBinaries)")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("building an image needs root (mmdebstrap, chroot and file ownership in the slot)")
	}
	b := &builder{spec: spec, outDir: outDir, opts: o, log: o.log}
	digest, err := spec.Digest()
	if err != nil {
		return nil, err
	}
	b.digest = digest
	res, err := b.run(ctx)
	if err != nil {
		for _, p := range b.partials {
			os.Remove(p)
		}
		return nil, err
	}
	return res, nil
}

type phase struct {
	name string
	run  func(ctx context.Context) (string, error)
}

func (b *builder) run(ctx context.Context) (*Result, error) {
	if err := os.MkdirAll(b.outDir, 0o755); err != nil {
		return nil, fmt.Errorf("output dir: %w", err)
	}
	work, err := os.MkdirTemp(b.opts.cacheDir, "work-")
	if err != nil {
		if err := os.MkdirAll(b.opts.cacheDir, 0o755); err != nil {
			return nil, fmt.Errorf("cache dir: %w", err)
		}
		if work, err = os.MkdirTemp(b.opts.cacheDir, "work-"); err != nil {
			return nil, fmt.Errorf("work dir: %w", err)
		}
	}
	b.work = work
	defer os.RemoveAll(work)

	res := &Result{}
	var (
		rootfs, rootfsKey, base string
		layer                   map[string]layerFile
		slot                    slotInfo
		lay                     layout
	)
	rawPartial := filepath.Join(b.outDir, "."+RawName+partialSf)
	phases := []phase{
		{"rootfs", func(ctx context.Context) (string, error) {
			dir, meta, cached, err := b.ensureRootfs(ctx)
			if err != nil {
				return "", err
			}
			rootfs, rootfsKey, res.RootfsCached = dir, meta.Key, cached
			b.epoch = meta.Created
			if v := os.Getenv("SOURCE_DATE_EPOCH"); v != "" {
				e, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return "", fmt.Errorf("SOURCE_DATE_EPOCH=%q: %w", v, err)
				}
				b.epoch = e
			}
			if b.opts.epochSet {
				b.epoch = b.opts.epoch
			}
			if cached {
				return "cached " + meta.Key, nil
			}
			return "built " + meta.Key, nil
		}},
		{"base", func(ctx context.Context) (string, error) {
			var err error
			if layer, err = b.layerFiles(); err != nil {
				return "", err
			}
			if b.kernel, err = kernelVersion(rootfs); err != nil {
				return "", err
			}
			key, err := b.baseKey(rootfsKey, layer)
			if err != nil {
				return "", fmt.Errorf("base key: %w", err)
			}
			var cached bool
			if base, cached, err = b.ensureBase(ctx, rootfs, key, layer); err != nil {
				return "", err
			}
			res.BaseCached = cached
			if cached {
				return "cached " + key, nil
			}
			return fmt.Sprintf("built %s (%s)", key, b.spec.Compression), nil
		}},
		{"slot", func(ctx context.Context) (string, error) {
			s, err := b.slotSquashfs(ctx, base, layer)
			slot = s
			return fmt.Sprintf("base + %d layer files, %d MiB", len(layer), s.size>>20), err
		}},
		{"disk", func(ctx context.Context) (string, error) {
			b.partials = append(b.partials, rawPartial)
			l, err := b.assemble(ctx, rawPartial, slot)
			lay = l
			return fmt.Sprintf("%d MiB GPT", l.total>>20), err
		}},
		{"outputs", func(ctx context.Context) (string, error) {
			return b.outputs(ctx, rawPartial, slot, lay, res)
		}},
	}
	for i, ph := range phases {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		b.opts.progress.Start(i+1, len(phases), ph.name)
		t0 := time.Now()
		detail, err := ph.run(ctx)
		b.opts.progress.End(detail, err)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", ph.name, err)
		}
		b.log.Info("phase done", slog.String("phase", ph.name), slog.Duration("took", time.Since(t0)), slog.String("detail", detail))
	}
	return res, nil
}
