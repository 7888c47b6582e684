package agent

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
	"github.com/debvisor/debvisor/nodeagent/config"
	"github.com/debvisor/debvisor/nodeagent/health"
	"github.com/debvisor/debvisor/osimage"
)

// ValidateScript is the image's own shape check (read-only root, overlays,
// booted from a slot); the agent runs it as one check of the report.
const ValidateScript = "/usr/local/sbin/validate-components.sh"

// nodeChecks registers the checks beyond the API's own (server.
// DefaultChecks): libvirt and pools when the agent drives libvirt, and on a
// DebVisor node the units, the data partition, failed units and the
// image's validate script. Together they are the one health report.
func (a *Agent) nodeChecks(onNode bool) error {
	var checks []health.Check
	if a.libvirt != nil {
		checks = append(checks,
			health.Check{Name: "libvirt", Critical: true, Run: a.libvirt.Ping},
			health.Check{Name: "autostart-vms", Critical: true, Run: func(ctx context.Context) error {
				vms, err := a.VMs.List(ctx)
				if err != nil {
					return err
				}
				var down []string
				for _, v := range vms {
					if v.GetSpec().GetAutostart() && v.GetStatus().GetState() != v1.VMStatus_STATE_RUNNING {
						down = append(down, v.GetName())
					}
				}
				if len(down) > 0 {
					return fmt.Errorf("autostart VMs not running: %s", strings.Join(down, ", "))
				}
				return nil
			}},
			health.Check{Name: "pools-active", Critical: true, Run: func(ctx context.Context) error {
				down, err := a.Storage.InactiveAutostartPools(ctx)
				if err != nil {
					return err
				}
				if len(down) > 0 {
					return fmt.Errorf("autostart pools not running: %s", strings.Join(down, ", "))
				}
				return nil
			}},
		)
	}
	if onNode {
		checks = append(checks,
			health.Check{Name: "units-active", Critical: true, Run: health.UnitsActive("debvisor-rpcd.service", "libvirtd.service")},
			health.Check{Name: "data-partition", Critical: true, Run: health.MountedRW(osimage.DataMount)},
			health.Check{Name: "data-free-space", Run: health.FreeSpace(osimage.DataMount, 0.05)},
			health.Check{Name: "failed-units", Run: health.NoFailedUnits()},
			health.Check{Name: "validate-components", Critical: true, Timeout: 30 * time.Second, Run: health.Script(ValidateScript)},
		)
	}
	for _, c := range checks {
		if err := a.Health.Add(c); err != nil {
			return err
		}
	}
	return nil
}

// defaultPool keeps the configured default pool in existence: created
// (built on the data partition) when missing, started when stopped. It
// retries while libvirtd is not up yet, then stays idle.
func (a *Agent) defaultPool(cfg config.Config) Background {
	spec := &v1.Pool{Name: cfg.Storage.DefaultPool, Type: v1.Pool_TYPE_DIR,
		Path: filepath.Join(cfg.Storage.PoolRoots[0], cfg.Storage.DefaultPool)}
	return Background{Name: "default pool", Run: func(ctx context.Context) error {
		for {
			err := a.Storage.EnsurePool(ctx, spec)
			if err == nil {
				a.log.Info("default pool ready", "pool", spec.Name, "path", spec.Path)
				<-ctx.Done()
				return nil
			}
			a.log.Warn("default pool not ready; retrying", "pool", spec.Name, "err", err)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(5 * time.Second):
			}
		}
	}}
}
