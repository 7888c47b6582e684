package cluster

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/debvisor/debvisor/api/rules"
	"github.com/debvisor/debvisor/nodeagent/discovery"

	"github.com/debvisor/debvisor/internal/atomicfile"
)

// Files under state_dir/cluster. state.json is written last when a node
// enrolls: its presence is what "enrolled" means, so an enrollment cut
// short runs again.
const (
	stateDirName = "cluster"
	stateFile    = "state.json"
	keyringFile  = "keyring.json"
	tokensFile   = "tokens.json"
	// gossipKeyLen selects AES-256 for memberlist's encryption.
	gossipKeyLen = 32
)

// state is what a node remembers about its cluster.
type state struct {
	ClusterID string `json:"cluster_id"`
	NodeID    string `json:"node_id"`
	// Peers are gossip addresses of the other members last seen, for
	// rejoining after a restart.
	Peers []string `json:"peers,omitempty"`
}

func (s state) validate() error {
	if err := rules.CheckHostname(s.ClusterID); err != nil {
		return fmt.Errorf("cluster_id: %w", err)
	}
	if err := discovery.CheckNodeID(s.NodeID); err != nil {
		return fmt.Errorf("node_id: %w", err)
	}
	return nil
}

type keyring struct {
	// Keys are the gossip encryption keys, the primary first.
	Keys [][]byte `json:"keys"`
}

func (k keyring) validate() error {
	if len(k.Keys) == 0 {
		return errors.New("no gossip key")
	}
	for i, key := range k.Keys {
		if len(key) != gossipKeyLen {
			return fmt.Errorf("gossip key %d is %d bytes, want %d", i, len(key), gossipKeyLen)
		}
	}
	return nil
}

func stateDir(agentState string) string { return filepath.Join(agentState, stateDirName) }

// readJSON reads path into v; a missing file is os.ErrNotExist.
func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// writeJSON replaces path atomically with v, mode 0600 (keys, token
// hashes and peer lists are nobody else's business).
func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(path, append(b, '\n'), 0o600)
}

func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	return atomicfile.WriteFile(path, data, mode)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b) // never fails on Linux
	return hex.EncodeToString(b)
}

func newNodeID() string { return randomHex(16) }

func newGossipKey() []byte {
	k := make([]byte, gossipKeyLen)
	_, _ = rand.Read(k)
	return k
}
