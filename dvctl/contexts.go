package dvctl

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/goccy/go-yaml"

	"github.com/debvisor/debvisor/internal/yamlstrict"
)

// File is dvctl's config: named contexts, like a kubeconfig.
type File struct {
	CurrentContext string    `yaml:"current_context"`
	Contexts       []Context `yaml:"contexts"`
}

// Context is one agent (or cluster entry point) and the credentials for it.
type Context struct {
	Name string `yaml:"name"`
	// Endpoint is host:port, or unix:///run/debvisor/agent.sock.
	Endpoint   string `yaml:"endpoint"`
	CA         string `yaml:"ca,omitempty"`
	Cert       string `yaml:"cert,omitempty"`
	Key        string `yaml:"key,omitempty"`
	ServerName string `yaml:"server_name,omitempty"`
}

// DefaultConfigPath is $DVCTL_CONFIG, else ~/.config/debvisor/dvctl.yaml.
func DefaultConfigPath() string {
	if p := os.Getenv("DVCTL_CONFIG"); p != "" {
		return p
	}
	dir, err := os.UserConfigDir()
	if err != nil {
		dir = "/root/.config"
	}
	return filepath.Join(dir, "debvisor", "dvctl.yaml")
}

// LoadFile reads path; a missing file is an empty config.
func LoadFile(path string) (*File, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return &File{}, nil
	}
	if err != nil {
		return nil, err
	}
	return ParseFile(data)
}

// ParseFile parses a dvctl config strictly.
func ParseFile(data []byte) (*File, error) {
	f := &File{}
	if len(bytes.TrimSpace(data)) == 0 {
		return f, nil
	}
	if err := yamlstrict.Decode(data, f); err != nil {
		return nil, err
	}
	seen := map[string]bool{}
	for i, c := range f.Contexts {
		if c.Name == "" {
			return nil, fmt.Errorf("contexts[%d].name: must not be empty", i)
		}
		if seen[c.Name] {
			return nil, fmt.Errorf("contexts[%d].name: %q is defined twice", i, c.Name)
		}
		seen[c.Name] = true
	}
	return f, nil
}

// Save writes the config 0600: it names key files.
func (f *File) Save(path string) error {
	data, err := yaml.Marshal(f)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// Get returns the named context.
func (f *File) Get(name string) (Context, bool) {
	for _, c := range f.Contexts {
		if c.Name == name {
			return c, true
		}
	}
	return Context{}, false
}

// Set adds or replaces a context.
func (f *File) Set(c Context) {
	for i := range f.Contexts {
		if f.Contexts[i].Name == c.Name {
			f.Contexts[i] = c
			return
		}
	}
	f.Contexts = append(f.Contexts, c)
}
