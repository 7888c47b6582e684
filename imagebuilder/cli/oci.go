package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/mattn/go-isatty"
	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/debvisor/debvisor/imagebuilder"
	"github.com/debvisor/debvisor/internal/buildinfo"
	"github.com/debvisor/debvisor/osimage/artifact"
	"github.com/debvisor/debvisor/osimage/registry"
	"github.com/debvisor/debvisor/osimage/signature"
)

// ociFlags are the registry and output flags push, pull, sign and verify
// share.
type ociFlags struct {
	insecureHTTP bool
	caBundles    []string
	retries      int
	platform     string
	progress     string
	logLevel     string
	passwordEnv  string
}

func (f *ociFlags) add(fs *pflag.FlagSet) {
	f.addRegistry(fs)
	fs.StringVar(&f.progress, "progress", "", "tty, plain, json (JSON lines on stderr, the result as JSON on stdout) or quiet; default tty on a terminal, else json")
	fs.StringVar(&f.logLevel, "log-level", "warn", "debug shows retries")
}

func (f *ociFlags) addPlatform(fs *pflag.FlagSet) {
	fs.StringVar(&f.platform, "platform", artifact.OS+"/"+imagebuilder.Architecture, "OS/ARCH of the artifacts to read")
}

// addRegistry adds the flags about reaching a registry and signing (the
// part `build --push` shares).
func (f *ociFlags) addRegistry(fs *pflag.FlagSet) {
	fs.BoolVar(&f.insecureHTTP, "insecure-http", false, "allow plain HTTP to the registry (otherwise TLS only, loopback included)")
	fs.StringArrayVar(&f.caBundles, "ca-bundle", nil, "PEM file of CA certificates trusted for the registry, besides the system's (repeatable)")
	fs.IntVar(&f.retries, "retries", 4, "attempts for requests failing with 5xx or a dropped connection")
	fs.StringVar(&f.passwordEnv, "key-password-env", "COSIGN_PASSWORD", "environment variable holding the password of an encrypted (cosign) private key")
	f.platform = artifact.OS + "/" + imagebuilder.Architecture
}

// session is what one command runs with.
type session struct {
	log      *slog.Logger
	progress *imagebuilder.Progress
	mode     imagebuilder.ProgressMode
	client   *registry.Client
}

func (f *ociFlags) session(stderr io.Writer) (*session, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(f.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level: %w", err)
	}
	mode := f.progress
	if mode == "" {
		mode = string(imagebuilder.ProgressJSON)
		if fd, ok := stderr.(*os.File); ok && isatty.IsTerminal(fd.Fd()) {
			mode = string(imagebuilder.ProgressTTY)
		}
	}
	m, err := imagebuilder.ParseProgressMode(mode)
	if err != nil {
		return nil, err
	}
	s := &session{
		log:      slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
		progress: imagebuilder.NewProgress(m, stderr, nil),
		mode:     m,
	}
	p, err := v1.ParsePlatform(f.platform)
	if err != nil || p.OS == "" || p.Architecture == "" {
		return nil, fmt.Errorf("--platform %q: want OS/ARCH", f.platform)
	}
	opts := []registry.Option{
		registry.WithInsecureHTTP(f.insecureHTTP),
		registry.WithRetry(f.retries, time.Second),
		registry.WithLogger(s.log),
		registry.WithPlatform(*p),
		registry.WithUserAgent("debvisor-image/" + buildinfo.Version),
		registry.WithProgress(func(p registry.Progress) { s.progress.Bytes(p.Done, p.Total) }),
	}
	for _, ca := range f.caBundles {
		opts = append(opts, registry.WithCABundle(ca))
	}
	if s.client, err = registry.New(opts...); err != nil {
		return nil, err
	}
	return s, nil
}

// phases runs named steps with progress, like the build does.
func (s *session) phases(ctx context.Context, steps ...step) error {
	for i, st := range steps {
		if err := ctx.Err(); err != nil {
			return err
		}
		s.progress.Start(i+1, len(steps), st.name)
		detail, err := st.run(ctx)
		s.progress.End(detail, err)
		if err != nil {
			return err
		}
	}
	return nil
}

type step struct {
	name string
	run  func(ctx context.Context) (string, error)
}

// result is printed on stdout: one line of text, or JSON in json mode.
func (s *session) result(stdout io.Writer, text string, v any) error {
	if s.mode == imagebuilder.ProgressJSON {
		return json.NewEncoder(stdout).Encode(v)
	}
	_, err := fmt.Fprintln(stdout, text)
	return err
}

func (f *ociFlags) signer(path string) (*signature.Signer, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	k, err := signature.ParsePrivateKey(b, func() ([]byte, error) {
		pw, ok := os.LookupEnv(f.passwordEnv)
		if !ok {
			return nil, fmt.Errorf("%s is an encrypted key: set %s to its password", path, f.passwordEnv)
		}
		return []byte(pw), nil
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return signature.NewSigner(k)
}

func verifierFrom(paths []string) (*signature.Verifier, error) {
	if len(paths) == 0 {
		return nil, errors.New("--key PUBLIC_KEY is required: a release is only used after its signature verifies")
	}
	return signature.LoadVerifier(paths...)
}

func mib(n int64) string { return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20)) }

// pushResult is push's (and build --push's) JSON result.
type pushResult struct {
	Ref      string   `json:"ref"`
	Pinned   string   `json:"pinned"`
	Digest   string   `json:"digest"`
	Version  string   `json:"version"`
	Uploaded int64    `json:"uploaded_bytes"`
	Signed   []string `json:"signed_by,omitempty"`
}

// pushDir pushes the release in dir to ref and signs it with signKey
// when given: the work of `push` and of `build --push`.
func (s *session) pushDir(ctx context.Context, f *ociFlags, dir, ref, signKey string, kinds []artifact.Kind) (*pushResult, error) {
	r, err := s.client.ParseReference(ref)
	if err != nil {
		return nil, err
	}
	var signer *signature.Signer
	if signKey != "" {
		// Load the key before anything is uploaded: a wrong password
		// should not leave an unsigned release behind.
		if signer, err = f.signer(signKey); err != nil {
			return nil, err
		}
	}
	var local *artifact.Local
	out := &pushResult{}
	steps := []step{
		{"read", func(ctx context.Context) (string, error) {
			var opts []artifact.Option
			if len(kinds) > 0 {
				opts = append(opts, artifact.WithKinds(kinds...))
			}
			opts = append(opts, artifact.WithProgress(s.progress.Bytes))
			l, err := artifact.FromDir(ctx, dir, opts...)
			if err != nil {
				return "", err
			}
			local = l
			d, _ := l.Index().Digest()
			out.Version = l.Metadata.Version
			return fmt.Sprintf("release %s (%v) %s", l.Metadata.Version, l.Kinds(), d), nil
		}},
		{"push", func(ctx context.Context) (string, error) {
			res, err := s.client.Push(ctx, r, local.Index())
			if err != nil {
				return "", err
			}
			out.Ref, out.Pinned, out.Digest, out.Uploaded = r.String(), res.Digest.String(), res.Digest.DigestStr(), res.Uploaded
			if res.Uploaded == 0 {
				return res.Digest.String() + ", every blob already there", nil
			}
			return fmt.Sprintf("%s, %s uploaded", res.Digest, mib(res.Uploaded)), nil
		}},
	}
	if signer != nil {
		steps = append(steps, step{"sign", func(ctx context.Context) (string, error) {
			d := r.Context().Digest(out.Digest)
			added, err := s.client.Sign(ctx, d, signer)
			if err != nil {
				return "", err
			}
			out.Signed = append(out.Signed, signer.KeyID())
			if !added {
				return "already signed by key " + signer.KeyID()[:16], nil
			}
			return "signed by key " + signer.KeyID()[:16], nil
		}})
	}
	if err := s.phases(ctx, steps...); err != nil {
		return nil, err
	}
	return out, nil
}

func parseKinds(s []string) ([]artifact.Kind, error) {
	var ks []artifact.Kind
	for _, x := range s {
		for _, y := range strings.Split(x, ",") {
			if y == "all" {
				return nil, nil
			}
			k, err := artifact.ParseKind(y)
			if err != nil {
				return nil, fmt.Errorf("--artifact: %w", err)
			}
			ks = append(ks, k)
		}
	}
	return ks, nil
}

func newPush(stdout, stderr io.Writer) *cobra.Command {
	var f ociFlags
	var signKey string
	var kinds []string
	cmd := &cobra.Command{
		Use:   "push OUTPUT REF",
		Short: "Push a build output directory to an OCI registry as a release (slot and disk artifacts), optionally signed",
		Long: `Push reads OUTPUT (manifest.json and the raw image a build wrote, or a directory
a pull wrote) and pushes one OCI image index to REF: the slot artifact (the
squashfs an upgrade writes) and the disk artifact (the zstd-compressed raw image
an installer writes). Blobs the registry already has are not uploaded. With
--sign-key the release is signed the way cosign signs (see docs/image-builder.md).
The release's digest reference is printed on stdout.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			ks, err := parseKinds(kinds)
			if err != nil {
				return err
			}
			s, err := f.session(stderr)
			if err != nil {
				return err
			}
			res, err := s.pushDir(cmd.Context(), &f, args[0], args[1], signKey, ks)
			if err != nil {
				return err
			}
			return s.result(stdout, res.Pinned, res)
		},
	}
	f.add(cmd.Flags())
	cmd.Flags().StringVar(&signKey, "sign-key", "", "private key to sign the release with (DebVisor PEM key, or cosign.key with its password in $COSIGN_PASSWORD)")
	cmd.Flags().StringArrayVar(&kinds, "artifact", nil, "slot, disk or all (default: every artifact whose file OUTPUT has)")
	return cmd
}

func newPull(stdout, stderr io.Writer) *cobra.Command {
	var f ociFlags
	var keys, kinds []string
	cmd := &cobra.Command{
		Use:   "pull REF DIR --key PUBLIC_KEY",
		Short: "Verify a release's signature, then pull its artifacts into DIR (raw image, slot, manifest.json)",
		Long: `Pull resolves REF, verifies its signature with the given public key(s) (DebVisor's
or cosign's cosign.pub) before reading anything else, then streams the artifacts
into DIR: debvisor.raw (sparse), debvisor-slot.squashfs and manifest.json. Every
byte is checked against the signed digests; files are written under hidden
temporary names and renamed only when all of them verified, so a failed pull
leaves DIR as it was.`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := verifierFrom(keys)
			if err != nil {
				return err
			}
			ks, err := parseKinds(kinds)
			if err != nil {
				return err
			}
			s, err := f.session(stderr)
			if err != nil {
				return err
			}
			r, err := s.client.ParseReference(args[0])
			if err != nil {
				return err
			}
			var rel *registry.Release
			var files []string
			err = s.phases(cmd.Context(),
				step{"verify", func(ctx context.Context) (string, error) {
					rel, err = s.client.Open(ctx, r, v)
					if err != nil {
						return "", err
					}
					if len(ks) == 0 {
						for _, k := range artifact.Kinds {
							if _, err := rel.Index.Find(k, platformOf(f.platform)); err == nil {
								ks = append(ks, k)
							}
						}
						if len(ks) == 0 {
							return "", fmt.Errorf("%s has no artifact for %s", rel.Ref, f.platform)
						}
					}
					return fmt.Sprintf("%s release %s signed by key %s", rel.Ref.DigestStr(), rel.Index.Metadata.Version, rel.Signature.KeyID[:16]), nil
				}},
				step{"pull", func(ctx context.Context) (string, error) {
					files, err = rel.PullToDir(ctx, args[1], ks...)
					if err != nil {
						return "", err
					}
					return strings.Join(files, ", "), nil
				}},
			)
			if err != nil {
				return err
			}
			return s.result(stdout, strings.Join(files, "\n"), map[string]any{
				"ref": rel.Ref.String(), "version": rel.Index.Metadata.Version, "key_id": rel.Signature.KeyID, "files": files,
			})
		},
	}
	f.add(cmd.Flags())
	f.addPlatform(cmd.Flags())
	cmd.Flags().StringArrayVar(&keys, "key", nil, "trusted public key, PEM (repeatable; any one signature by any of them is enough)")
	cmd.Flags().StringArrayVar(&kinds, "artifact", nil, "slot, disk or all (default: all the release has for --platform)")
	return cmd
}

func platformOf(s string) v1.Platform {
	p, err := v1.ParsePlatform(s)
	if err != nil {
		return v1.Platform{}
	}
	return *p
}

func newSign(stdout, stderr io.Writer) *cobra.Command {
	var f ociFlags
	var key string
	cmd := &cobra.Command{
		Use:   "sign REF --key PRIVATE_KEY",
		Short: "Sign a pushed release the way cosign does (sha256-<digest>.sig tag, simple-signing payload)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if key == "" {
				return errors.New("--key PRIVATE_KEY is required")
			}
			signer, err := f.signer(key)
			if err != nil {
				return err
			}
			s, err := f.session(stderr)
			if err != nil {
				return err
			}
			r, err := s.client.ParseReference(args[0])
			if err != nil {
				return err
			}
			var added bool
			var d fmt.Stringer
			err = s.phases(cmd.Context(), step{"sign", func(ctx context.Context) (string, error) {
				dg, err := s.client.Resolve(ctx, r)
				if err != nil {
					return "", err
				}
				d = dg
				if added, err = s.client.Sign(ctx, dg, signer); err != nil {
					return "", err
				}
				if !added {
					return dg.String() + " already signed by key " + signer.KeyID()[:16], nil
				}
				return dg.String() + " signed by key " + signer.KeyID()[:16], nil
			}})
			if err != nil {
				return err
			}
			return s.result(stdout, d.String(), map[string]any{"ref": d.String(), "key_id": signer.KeyID(), "added": added})
		},
	}
	f.add(cmd.Flags())
	cmd.Flags().StringVar(&key, "key", "", "private key (DebVisor PEM key, or cosign.key with its password in $COSIGN_PASSWORD)")
	return cmd
}

func newVerify(stdout, stderr io.Writer) *cobra.Command {
	var f ociFlags
	var keys []string
	cmd := &cobra.Command{
		Use:   "verify REF --key PUBLIC_KEY",
		Short: "Check that a release is signed by a trusted key and well formed; non-zero exit otherwise",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			v, err := verifierFrom(keys)
			if err != nil {
				return err
			}
			s, err := f.session(stderr)
			if err != nil {
				return err
			}
			r, err := s.client.ParseReference(args[0])
			if err != nil {
				return err
			}
			var rel *registry.Release
			err = s.phases(cmd.Context(), step{"verify", func(ctx context.Context) (string, error) {
				rel, err = s.client.Open(ctx, r, v)
				if err != nil {
					return "", err
				}
				// Read every artifact's manifest and build manifest too: a
				// release that verifies but cannot be installed is not valid.
				for _, k := range artifact.Kinds {
					if _, err := rel.Index.Find(k, platformOf(f.platform)); err != nil {
						continue
					}
					if _, err := rel.Artifact(ctx, k); err != nil {
						return "", err
					}
				}
				return "signed by key " + rel.Signature.KeyID[:16], nil
			}})
			if err != nil {
				return err
			}
			m := rel.Index.Metadata
			return s.result(stdout,
				fmt.Sprintf("%s: DebVisor %s (kernel %s, %s), signed by key %s", rel.Ref, m.Version, orDefault(m.Kernel, "unknown"), m.Architecture, rel.Signature.KeyID),
				map[string]any{"ref": rel.Ref.String(), "version": m.Version, "kernel": m.Kernel, "architecture": m.Architecture,
					"spec_digest": m.SpecDigest, "source_date_epoch": m.SourceDateEpoch, "key_id": rel.Signature.KeyID})
		},
	}
	f.add(cmd.Flags())
	f.addPlatform(cmd.Flags())
	cmd.Flags().StringArrayVar(&keys, "key", nil, "trusted public key, PEM (repeatable)")
	return cmd
}

func newKeygen(stdout io.Writer) *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:   "keygen -o PREFIX",
		Short: "Make an ECDSA P-256 signing key pair: PREFIX.key (PKCS #8 PEM, mode 0600) and PREFIX.pub (PKIX PEM, what cosign reads)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if out == "" {
				return errors.New("-o PREFIX is required")
			}
			k, err := signature.GenerateKey(nil)
			if err != nil {
				return err
			}
			priv, err := signature.MarshalPrivateKey(k)
			if err != nil {
				return err
			}
			pub, err := signature.MarshalPublicKey(&k.PublicKey)
			if err != nil {
				return err
			}
			if dir := filepath.Dir(out); dir != "." {
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
			}
			// O_EXCL: never overwrite a key someone relies on.
			for _, w := range []struct {
				path string
				b    []byte
				mode os.FileMode
			}{{out + ".key", priv, 0o600}, {out + ".pub", pub, 0o644}} {
				f, err := os.OpenFile(w.path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, w.mode)
				if err != nil {
					return fmt.Errorf("keygen: %w", err)
				}
				if _, err := f.Write(w.b); err != nil {
					f.Close()
					return err
				}
				if err := f.Close(); err != nil {
					return err
				}
			}
			fmt.Fprintf(stdout, "%s.key\n%s.pub\nkey id %s\n", out, out, signature.KeyID(&k.PublicKey))
			return nil
		},
	}
	cmd.Flags().StringVarP(&out, "output", "o", "", "path prefix of the two files")
	return cmd
}

// pushFlags are build's --push and its registry flags.
type pushFlags struct {
	ociFlags
	ref, signKey string
}

func (p *pushFlags) add(fs *pflag.FlagSet) {
	fs.StringVar(&p.ref, "push", "", "after building, push the release to this OCI reference (see `debvisor-image push`)")
	fs.StringVar(&p.signKey, "sign-key", "", "with --push: sign the release with this private key")
	p.addRegistry(fs)
}

// check refuses bad push options before a build spends minutes.
func (p *pushFlags) check() error {
	if p.ref == "" {
		if p.signKey != "" {
			return errors.New("--sign-key needs --push")
		}
		return nil
	}
	opts := []registry.Option{registry.WithInsecureHTTP(p.insecureHTTP)}
	for _, ca := range p.caBundles {
		opts = append(opts, registry.WithCABundle(ca))
	}
	c, err := registry.New(opts...)
	if err != nil {
		return err
	}
	if _, err := c.ParseReference(p.ref); err != nil {
		return fmt.Errorf("--push: %w", err)
	}
	if p.signKey != "" {
		if _, err := p.signer(p.signKey); err != nil {
			return err
		}
	}
	return nil
}

// run pushes the build output: the result printed is push's.
func (p *pushFlags) run(ctx context.Context, out, progress, logLevel string, stdout, stderr io.Writer) error {
	p.progress, p.logLevel = progress, logLevel
	s, err := p.session(stderr)
	if err != nil {
		return err
	}
	res, err := s.pushDir(ctx, &p.ociFlags, out, p.ref, p.signKey, nil)
	if err != nil {
		return fmt.Errorf("push (the build in %s is complete): %w", out, err)
	}
	return s.result(stdout, res.Pinned, res)
}
