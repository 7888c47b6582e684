package qemu

import (
	"context"
	"encoding/json"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
)

// AgentPort is the agent's mTLS gRPC port in the guest.
const AgentPort = 7443

// Credentials are the files an admin client proves itself with.
type Credentials struct {
	CA, Cert, Key string
}

// Dvctl runs the dvctl binary against an agent, as a user would.
type Dvctl struct {
	Path  string
	Creds Credentials
}

// StatusArgs are dvctl's arguments for `status` against endpoint
// (host:port); the quickstart prints them for people to copy.
func (d Dvctl) StatusArgs(endpoint string) []string {
	return []string{"status", "--node", endpoint, "--ca", d.Creds.CA, "--cert", d.Creds.Cert, "--key", d.Creds.Key}
}

// Status runs `dvctl status -o json` and returns the decoded node.
func (d Dvctl) Status(ctx context.Context, endpoint string) (map[string]any, error) {
	args := append(d.StatusArgs(endpoint), "-o", "json")
	out, err := exec.CommandContext(ctx, d.Path, args...).CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("dvctl status: %w: %s", err, out)
	}
	var m map[string]any
	if err := json.Unmarshal(out, &m); err != nil {
		return nil, fmt.Errorf("dvctl status output: %w: %s", err, out)
	}
	return m, nil
}

// AgentEndpoint is the loopback address forwarded to the guest's agent,
// or "" when none is.
func (m *Machine) AgentEndpoint() string {
	if p := m.HostPort(AgentPort); p != 0 {
		return fmt.Sprintf("127.0.0.1:%d", p)
	}
	return ""
}

// GRUBBoot is one boot decision grub.cfg printed on the console:
// "debvisor: booting slot A (hd0,gpt2) fallback=0".
type GRUBBoot struct {
	Slot      string // "A" or "B"
	Partition string // GRUB's device, "hd0,gpt2"
	Fallback  bool
}

var grubBootLine = regexp.MustCompile(`debvisor: booting slot ([A-Za-z]+) \((.*?)\) fallback=([01])`)

// GRUBBoots returns GRUB's boot decisions in console order, so a test can
// judge GRUB's choice from the serial console without waiting for a full
// boot. Under BIOS GRUB draws on the serial line itself and a line may be
// interleaved with terminal escapes; only complete lines count.
func GRUBBoots(console string) []GRUBBoot {
	var out []GRUBBoot
	for _, line := range strings.Split(console, "\n") {
		for _, m := range grubBootLine.FindAllStringSubmatch(line, -1) {
			out = append(out, GRUBBoot{Slot: m[1], Partition: m[2], Fallback: m[3] == "1"})
		}
	}
	return out
}
