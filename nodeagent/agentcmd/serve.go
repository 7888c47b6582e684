package agentcmd

import (
	"github.com/spf13/cobra"

	"github.com/debvisor/debvisor/nodeagent/agent"
	"github.com/debvisor/debvisor/nodeagent/config"
)

func init() { register(newServeCmd) }

func newServeCmd(env *Env) *cobra.Command {
	var (
		cfgPath string
		ov      config.Config
	)
	cmd := &cobra.Command{
		Use:   "serve",
		Short: "Run the API daemon (gRPC + REST over mTLS, and the local socket)",
		Long: `serve runs the node agent's API until SIGTERM/SIGINT, then drains requests
and running operations within shutdown_timeout.

Settings come from the config file (default ` + config.DefaultPath + `); flags
override single keys. The API is mTLS only: tls.ca, tls.cert and tls.key must
name the cluster CA bundle and this node's certificate (make them with
"dvctl pki").`,
		Example: `  debvisor-agent serve
  debvisor-agent serve --config ./agent.yaml --listen 127.0.0.1:7443`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := config.Load(cfgPath)
			if err != nil {
				return err
			}
			f := cmd.Flags()
			for name, dst := range map[string]*string{
				"listen": &cfg.Listen, "rest-listen": &cfg.RESTListen, "socket": &cfg.Socket,
				"metrics-listen": &cfg.MetricsListen, "state-dir": &cfg.StateDir, "node-name": &cfg.NodeName,
				"log-level": &cfg.LogLevel, "log-format": &cfg.LogFormat,
				"tls-ca": &cfg.TLS.CA, "tls-cert": &cfg.TLS.Cert, "tls-key": &cfg.TLS.Key,
			} {
				if f.Changed(name) {
					*dst, _ = f.GetString(name)
				}
			}
			if err := cfg.Validate(); err != nil {
				return err
			}
			level, _ := config.ParseLevel(cfg.LogLevel)
			log := newLogger(env.Stderr, level, cfg.LogFormat)
			return agent.Run(cmd.Context(), cfg, agent.Options{Log: log, Root: "/"})
		},
	}
	f := cmd.Flags()
	f.StringVarP(&cfgPath, "config", "c", config.DefaultPath, "agent config file")
	f.StringVar(&ov.Listen, "listen", "", "gRPC mTLS address (config: listen)")
	f.StringVar(&ov.RESTListen, "rest-listen", "", "REST/JSON mTLS address, empty disables (config: rest_listen)")
	f.StringVar(&ov.Socket, "socket", "", "root-only unix socket, empty disables (config: socket)")
	f.StringVar(&ov.MetricsListen, "metrics-listen", "", "Prometheus /metrics address, empty disables (config: metrics_listen)")
	f.StringVar(&ov.StateDir, "state-dir", "", "persistent state directory (config: state_dir)")
	f.StringVar(&ov.NodeName, "node-name", "", "node name, default hostname (config: node_name)")
	f.StringVar(&ov.LogLevel, "log-level", "", "debug, info, warn or error (config: log_level)")
	f.StringVar(&ov.LogFormat, "log-format", "", "text or json (config: log_format)")
	f.StringVar(&ov.TLS.CA, "tls-ca", "", "cluster CA bundle (config: tls.ca)")
	f.StringVar(&ov.TLS.Cert, "tls-cert", "", "node certificate (config: tls.cert)")
	f.StringVar(&ov.TLS.Key, "tls-key", "", "node key (config: tls.key)")
	return cmd
}
