package network

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"

	"github.com/debvisor/debvisor/internal/atomicfile"
)

// FilePrefix starts the name of every systemd-networkd file DebVisor
// writes; files without it are never touched. networkd reads .network
// files in lexical order and the first match wins, so "10-" puts these
// ahead of distribution defaults.
const FilePrefix = "10-debvisor-"

const header = "# Written by the DebVisor agent (NetworkService). Change it through the API\n# (dvctl network apply): edits here are overwritten.\n"

// render turns a configuration into systemd-networkd files: a .netdev per
// bond, VLAN and bridge, and a .network per link the configuration names.
func render(c *v1.NetworkConfig) map[string][]byte {
	m := newModel(c)
	files := map[string][]byte{}
	for _, b := range c.GetBonds() {
		var w bytes.Buffer
		fmt.Fprintf(&w, "%s\n[NetDev]\nName=%s\nKind=bond\n\n[Bond]\nMode=%s\nMIIMonitorSec=%dms\n", header, b.GetName(), b.GetMode(), m.miimon(b))
		files[FilePrefix+b.GetName()+".netdev"] = w.Bytes()
	}
	for _, v := range c.GetVlans() {
		files[FilePrefix+v.GetName()+".netdev"] = fmt.Appendf(nil, "%s\n[NetDev]\nName=%s\nKind=vlan\n\n[VLAN]\nId=%d\n", header, v.GetName(), v.GetId())
	}
	for _, br := range c.GetBridges() {
		files[FilePrefix+br.GetName()+".netdev"] = fmt.Appendf(nil, "%s\n[NetDev]\nName=%s\nKind=bridge\n", header, br.GetName())
	}
	// DNS servers go with the links that carry a default gateway (the
	// uplink); with no gateway anywhere, with every addressed link.
	dnsOn := map[string]bool{}
	for _, ic := range c.GetInterfaces() {
		if ic.GetGateway4() != "" || ic.GetGateway6() != "" {
			dnsOn[ic.GetName()] = true
		}
	}
	if len(dnsOn) == 0 {
		for _, ic := range c.GetInterfaces() {
			if len(ic.GetAddresses()) > 0 || ic.GetDhcp4() || ic.GetDhcp6() {
				dnsOn[ic.GetName()] = true
			}
		}
	}
	routes := m.cfg.GetRoutes()
	for _, n := range m.names() {
		var w bytes.Buffer
		fmt.Fprintf(&w, "%s\n[Match]\nName=%s\n", header, n)
		ic := m.ifaces[n]
		if ic.GetMtu() != 0 {
			fmt.Fprintf(&w, "\n[Link]\nMTUBytes=%d\n", ic.GetMtu())
		}
		w.WriteString("\n[Network]\n")
		switch mst := m.master[n]; m.kind[mst] {
		case kindBond:
			fmt.Fprintf(&w, "Bond=%s\n", mst)
		case kindBridge:
			fmt.Fprintf(&w, "Bridge=%s\n", mst)
		}
		for _, v := range m.parents[n] {
			fmt.Fprintf(&w, "VLAN=%s\n", v)
		}
		switch {
		case ic.GetDhcp4() && ic.GetDhcp6():
			w.WriteString("DHCP=yes\n")
		case ic.GetDhcp4():
			w.WriteString("DHCP=ipv4\n")
		case ic.GetDhcp6():
			w.WriteString("DHCP=ipv6\n")
		}
		for _, a := range ic.GetAddresses() {
			fmt.Fprintf(&w, "Address=%s\n", a)
		}
		for _, g := range []string{ic.GetGateway4(), ic.GetGateway6()} {
			if g != "" {
				fmt.Fprintf(&w, "Gateway=%s\n", g)
			}
		}
		if dnsOn[n] {
			for _, d := range c.GetDnsServers() {
				fmt.Fprintf(&w, "DNS=%s\n", d)
			}
		}
		if m.master[n] != "" || (ic == nil && m.kind[n] != "") || (ic != nil && !ic.GetDhcp6() && !hasV6(ic)) {
			// Enslaved links and bare virtual links carry no addresses of
			// their own; links without IPv6 config get no fe80:: either.
			w.WriteString("LinkLocalAddressing=no\n")
		}
		if m.kind[n] == kindBridge || m.kind[n] == kindBond {
			// A bridge without ports (or a bond whose members are down)
			// still comes up, so VMs can join it.
			w.WriteString("ConfigureWithoutCarrier=yes\n")
		}
		for _, r := range routes {
			if r.GetInterface() != n {
				continue
			}
			fmt.Fprintf(&w, "\n[Route]\nDestination=%s\n", r.GetDestination())
			if r.GetGateway() != "" {
				fmt.Fprintf(&w, "Gateway=%s\n", r.GetGateway())
			}
			if r.GetMetric() != 0 {
				fmt.Fprintf(&w, "Metric=%d\n", r.GetMetric())
			}
		}
		files[FilePrefix+n+".network"] = w.Bytes()
	}
	return files
}

func hasV6(ic *v1.InterfaceConfig) bool {
	for _, a := range ic.GetAddresses() {
		if strings.Contains(a, ":") {
			return true
		}
	}
	return ic.GetGateway6() != ""
}

func ours(name string) bool {
	return strings.HasPrefix(name, FilePrefix) && (strings.HasSuffix(name, ".network") || strings.HasSuffix(name, ".netdev"))
}

// readFiles returns DebVisor's files in dir.
func readFiles(dir string) (map[string][]byte, error) {
	ents, err := os.ReadDir(dir)
	if os.IsNotExist(err) {
		return map[string][]byte{}, nil
	}
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for _, e := range ents {
		if !e.Type().IsRegular() || !ours(e.Name()) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		files[e.Name()] = b
	}
	return files, nil
}

// writeFiles makes DebVisor's files in dir exactly files: each written
// atomically (temporary file, fsync, rename), the others removed, the
// directory synced. A crash leaves every file either old or new.
func writeFiles(dir string, files map[string][]byte) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	old, err := readFiles(dir)
	if err != nil {
		return err
	}
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if !ours(n) {
			return fmt.Errorf("refusing to write %s: not a DebVisor file name", n)
		}
		if prev, ok := old[n]; ok && bytes.Equal(prev, files[n]) {
			continue
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, n), files[n], 0o644); err != nil {
			return err
		}
	}
	for n := range old {
		if _, keep := files[n]; !keep {
			if err := os.Remove(filepath.Join(dir, n)); err != nil && !os.IsNotExist(err) {
				return err
			}
		}
	}
	return atomicfile.SyncDir(dir)
}
