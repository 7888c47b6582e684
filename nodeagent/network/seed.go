package network

import (
	"fmt"
	"os"
	"path/filepath"

	"google.golang.org/protobuf/encoding/protojson"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"

	"github.com/debvisor/debvisor/internal/atomicfile"
)

// CheckConfig validates a configuration on its own, without a node to
// compare it with: the checks ApplyNetwork makes before it looks at the
// live links (names, VLAN ids, bonding modes, MTUs, addresses, gateways,
// routes, DNS servers). A NIC that does not exist is not caught here.
func CheckConfig(c *v1.NetworkConfig) error { return validateShape(c) }

// Seed makes c the desired configuration of a node that is not running:
// the systemd-networkd files go to networkdDir (replacing DebVisor's
// earlier ones, leaving every other file alone) and the configuration to
// stateDir, where the agent's Manager finds it as its desired one. Nothing
// is applied live: networkd brings the links up from the files when it
// (re)starts. firstboot uses it for a preseed's network section.
func Seed(networkdDir, stateDir string, c *v1.NetworkConfig) error {
	if err := CheckConfig(c); err != nil {
		return err
	}
	if err := writeFiles(networkdDir, render(c)); err != nil {
		return fmt.Errorf("write networkd files: %w", err)
	}
	b, err := protojson.Marshal(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(stateDir, 0o750); err != nil {
		return err
	}
	if err := atomicfile.WriteFile(filepath.Join(stateDir, desiredFile), b, 0o640); err != nil {
		return fmt.Errorf("write the desired configuration: %w", err)
	}
	return nil
}
