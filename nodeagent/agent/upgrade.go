package agent

import (
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/boot/bootenv"
	"github.com/debvisor/debvisor/nodeagent/config"
	"github.com/debvisor/debvisor/nodeagent/upgrade"
	"github.com/debvisor/debvisor/osimage"
	"github.com/debvisor/debvisor/osimage/registry"
	"github.com/debvisor/debvisor/osimage/signature"
)

// newUpgrade builds the upgrade manager on a DebVisor node: the boot
// environment on the mounted ESP, the slot partitions, the registry client
// and the trusted release keys. Without a trusted key the manager still
// reports slots and commits boots; upgrades are then refused with the
// reason.
func (a *Agent) newUpgrade(cfg config.Config, cmdline string) (*upgrade.Manager, error) {
	log := a.log.With("component", "upgrade")
	var opts []registry.Option
	opts = append(opts, registry.WithLogger(log), registry.WithInsecureHTTP(cfg.Upgrade.InsecureHTTP))
	if cfg.Upgrade.CABundle != "" {
		opts = append(opts, registry.WithCABundle(cfg.Upgrade.CABundle))
	}
	client, err := registry.New(opts...)
	if err != nil {
		return nil, fmt.Errorf("upgrade registry client: %w", err)
	}
	var src upgrade.Source = noKeys{patterns: cfg.Upgrade.TrustedKeys}
	if v, err := trustedKeys(cfg.Upgrade.TrustedKeys); err != nil {
		return nil, err
	} else if v != nil {
		src = upgrade.RegistrySource{Client: client, Verifier: v}
	}
	envOpts := []bootenv.Option{bootenv.WithLogger(log)}
	if cfg.Upgrade.TestEnvPause != "" {
		pause, _ := time.ParseDuration(cfg.Upgrade.TestEnvPause)
		log.Warn("upgrade.test_env_pause is set: the boot environment is written slowly (power-cut tests only)", "pause", pause)
		envOpts = append(envOpts, bootenv.WithAfterCopy(func(string) { time.Sleep(pause) }))
	}
	return upgrade.New(upgrade.Config{
		Env:            bootenv.NewStore(bootenv.DirFS{Root: cfg.Upgrade.ESP}, envOpts...),
		Devices:        map[osimage.Slot]string{osimage.SlotA: cfg.Upgrade.SlotA, osimage.SlotB: cfg.Upgrade.SlotB},
		StateDir:       cfg.StateDir,
		Cmdline:        cmdline,
		ReleaseFile:    cfg.Upgrade.ReleaseFile,
		Source:         src,
		Health:         a.upgradeHealth,
		Reboot:         systemReboot,
		CommitDeadline: cfg.Upgrade.CommitWait(),
		Log:            log,
	})
}

// trustedKeys loads the release keys; nil when the patterns match none.
func trustedKeys(patterns []string) (*signature.Verifier, error) {
	var keys []string
	for _, p := range patterns {
		m, err := filepath.Glob(p)
		if err != nil {
			return nil, fmt.Errorf("upgrade.trusted_keys: %q: %w", p, err)
		}
		keys = append(keys, m...)
	}
	if len(keys) == 0 {
		return nil, nil
	}
	verifier, err := signature.LoadVerifier(keys...)
	if err != nil {
		return nil, fmt.Errorf("upgrade.trusted_keys: %w", err)
	}
	return verifier, nil
}

// noKeys refuses every upgrade: no trusted key is configured, so no
// release can be verified.
type noKeys struct{ patterns []string }

func (n noKeys) Resolve(context.Context, string) (*upgrade.Artifact, error) {
	return nil, fmt.Errorf("no trusted release key matches upgrade.trusted_keys (%s): install the public key releases are signed with", strings.Join(n.patterns, ", "))
}

// upgradeHealth is the commit's reading of the one health report: it
// passes unless a critical check fails.
func (a *Agent) upgradeHealth(ctx context.Context) (bool, string) {
	s := a.Health.RunAll(ctx)
	if s.GetStatus() != v1.HealthSummary_STATUS_FAILING {
		return true, ""
	}
	var why []string
	for _, c := range s.GetChecks() {
		if !c.GetOk() && c.GetCritical() {
			why = append(why, c.GetName()+": "+c.GetMessage())
		}
	}
	return false, strings.Join(why, "; ")
}

func systemReboot(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, "systemctl", "reboot").CombinedOutput()
	if err != nil {
		return fmt.Errorf("systemctl reboot: %w: %s", err, strings.TrimSpace(string(out)))
	}
	return nil
}
