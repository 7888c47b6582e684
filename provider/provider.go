// Package provider is the DebVisor Terraform provider: resources and data sources that drive
// DebVisor node agents through their mTLS gRPC API. It imports only the API packages (api/...),
// never agent internals; deps_test.go enforces that.
package provider

import (
	"context"
	"fmt"
	"os"
	"time"

	"github.com/hashicorp/terraform-plugin-framework/datasource"
	"github.com/hashicorp/terraform-plugin-framework/path"
	"github.com/hashicorp/terraform-plugin-framework/provider"
	"github.com/hashicorp/terraform-plugin-framework/provider/schema"
	"github.com/hashicorp/terraform-plugin-framework/resource"
	"github.com/hashicorp/terraform-plugin-framework/types"

	"github.com/debvisor/debvisor/api/client"
	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// Defaults for the provider's timeouts.
const (
	defaultRequestTimeout   = 30 * time.Second
	defaultOperationTimeout = 20 * time.Minute
)

// Ensure DebVisorProvider satisfies the framework's interfaces.
var _ provider.Provider = &DebVisorProvider{}

// DebVisorProvider is the provider implementation.
type DebVisorProvider struct {
	// version is "dev" for local builds, the release version otherwise, "test" in acceptance tests.
	version string
}

// DebVisorProviderModel is the provider block.
type DebVisorProviderModel struct {
	Endpoint         types.String `tfsdk:"endpoint"`
	CAFile           types.String `tfsdk:"ca_file"`
	CertFile         types.String `tfsdk:"cert_file"`
	KeyFile          types.String `tfsdk:"key_file"`
	CAPEM            types.String `tfsdk:"ca_pem"`
	CertPEM          types.String `tfsdk:"cert_pem"`
	KeyPEM           types.String `tfsdk:"key_pem"`
	ServerName       types.String `tfsdk:"server_name"`
	RequestTimeout   types.String `tfsdk:"request_timeout"`
	OperationTimeout types.String `tfsdk:"operation_timeout"`
}

// New returns a constructor for the provider, as providerserver.Serve wants it.
func New(version string) func() provider.Provider {
	return func() provider.Provider { return &DebVisorProvider{version: version} }
}

func (p *DebVisorProvider) Metadata(_ context.Context, _ provider.MetadataRequest, resp *provider.MetadataResponse) {
	resp.TypeName = "debvisor"
	resp.Version = p.version
}

func (p *DebVisorProvider) Schema(_ context.Context, _ provider.SchemaRequest, resp *provider.SchemaResponse) {
	resp.Schema = schema.Schema{
		MarkdownDescription: "The DebVisor provider manages storage pools, volumes, virtual machines, the host network and " +
			"the operating system image of a DebVisor node by talking to its agent's mTLS gRPC API. Every setting can also come from a " +
			"`DEBVISOR_*` environment variable; a value in the configuration wins. TLS material is given " +
			"either as file paths or as inline PEM; inline PEM wins.",
		Attributes: map[string]schema.Attribute{
			"endpoint": schema.StringAttribute{
				MarkdownDescription: "The agent's gRPC address, `HOST:PORT` (port 7443 on a DebVisor node). " +
					"Env: `DEBVISOR_ENDPOINT`.",
				Optional: true,
			},
			"ca_file": schema.StringAttribute{
				MarkdownDescription: "Path of the cluster CA certificate bundle the node certificate must chain to. Env: `DEBVISOR_CA`.",
				Optional:            true,
			},
			"cert_file": schema.StringAttribute{
				MarkdownDescription: "Path of the client certificate (made with `dvctl pki issue client`). Env: `DEBVISOR_CERT`.",
				Optional:            true,
			},
			"key_file": schema.StringAttribute{
				MarkdownDescription: "Path of the client key. Env: `DEBVISOR_KEY`.",
				Optional:            true,
			},
			"ca_pem": schema.StringAttribute{
				MarkdownDescription: "The cluster CA certificate bundle as PEM; wins over `ca_file`. Env: `DEBVISOR_CA_PEM`.",
				Optional:            true,
			},
			"cert_pem": schema.StringAttribute{
				MarkdownDescription: "The client certificate as PEM; wins over `cert_file`. Env: `DEBVISOR_CERT_PEM`.",
				Optional:            true,
			},
			"key_pem": schema.StringAttribute{
				MarkdownDescription: "The client key as PEM; wins over `key_file`. Env: `DEBVISOR_KEY_PEM`.",
				Optional:            true,
				Sensitive:           true,
			},
			"server_name": schema.StringAttribute{
				MarkdownDescription: "Name checked against the node certificate, when it differs from the endpoint's host. " +
					"Env: `DEBVISOR_SERVER_NAME`.",
				Optional: true,
			},
			"request_timeout": schema.StringAttribute{
				MarkdownDescription: "How long one API call may take, as a Go duration (`30s`). Reads never wait on a guest. " +
					"Env: `DEBVISOR_REQUEST_TIMEOUT`. Default `30s`.",
				Optional: true,
			},
			"operation_timeout": schema.StringAttribute{
				MarkdownDescription: "Default limit for a long-running operation (create, update, delete) when the resource " +
					"has no `timeouts` block, as a Go duration. Env: `DEBVISOR_OPERATION_TIMEOUT`. Default `20m`.",
				Optional: true,
			},
		},
	}
}

// providerData is what Configure hands to every resource and data source.
type providerData struct {
	client *client.Client
	// cfg is how client was made: the network resource dials afresh with it to prove that a
	// new connection still reaches the node after a change.
	cfg              client.Config
	endpoint         string
	requestTimeout   time.Duration
	operationTimeout time.Duration
	volumes          volumeCache
}

// setting returns the configured value, else the environment variable, else "".
func setting(v types.String, env string) string {
	if !v.IsNull() && !v.IsUnknown() {
		return v.ValueString()
	}
	return os.Getenv(env)
}

func (p *DebVisorProvider) Configure(ctx context.Context, req provider.ConfigureRequest, resp *provider.ConfigureResponse) {
	var data DebVisorProviderModel
	resp.Diagnostics.Append(req.Config.Get(ctx, &data)...)
	if resp.Diagnostics.HasError() {
		return
	}
	// A value computed from another resource is unknown during the first plan; resources then plan
	// without reading, and the provider is configured for real at apply.
	for name, v := range map[string]types.String{"endpoint": data.Endpoint, "ca_pem": data.CAPEM, "cert_pem": data.CertPEM, "key_pem": data.KeyPEM} {
		if v.IsUnknown() {
			resp.Diagnostics.AddAttributeWarning(path.Root(name), "Unknown provider setting",
				"The DebVisor provider cannot connect until "+name+" is known; it will be configured at apply.")
			return
		}
	}

	cfg := client.Config{
		Endpoint:   setting(data.Endpoint, "DEBVISOR_ENDPOINT"),
		CAFile:     setting(data.CAFile, "DEBVISOR_CA"),
		CertFile:   setting(data.CertFile, "DEBVISOR_CERT"),
		KeyFile:    setting(data.KeyFile, "DEBVISOR_KEY"),
		CAPEM:      []byte(setting(data.CAPEM, "DEBVISOR_CA_PEM")),
		CertPEM:    []byte(setting(data.CertPEM, "DEBVISOR_CERT_PEM")),
		KeyPEM:     []byte(setting(data.KeyPEM, "DEBVISOR_KEY_PEM")),
		ServerName: setting(data.ServerName, "DEBVISOR_SERVER_NAME"),
	}
	if cfg.Endpoint == "" {
		resp.Diagnostics.AddAttributeError(path.Root("endpoint"), "Missing DebVisor endpoint",
			"Set endpoint in the provider block or DEBVISOR_ENDPOINT to the agent's HOST:PORT (port 7443 on a DebVisor node).")
		return
	}
	pd := &providerData{endpoint: cfg.Endpoint, cfg: cfg}
	for _, d := range []struct {
		attr, env string
		v         types.String
		def       time.Duration
		dst       *time.Duration
	}{
		{"request_timeout", "DEBVISOR_REQUEST_TIMEOUT", data.RequestTimeout, defaultRequestTimeout, &pd.requestTimeout},
		{"operation_timeout", "DEBVISOR_OPERATION_TIMEOUT", data.OperationTimeout, defaultOperationTimeout, &pd.operationTimeout},
	} {
		*d.dst = d.def
		s := setting(d.v, d.env)
		if s == "" {
			continue
		}
		dur, err := time.ParseDuration(s)
		if err != nil || dur <= 0 {
			resp.Diagnostics.AddAttributeError(path.Root(d.attr), "Invalid duration",
				fmt.Sprintf("%s (or %s) = %q is not a positive duration such as \"30s\" or \"10m\".", d.attr, d.env, s))
			return
		}
		*d.dst = dur
	}

	c, err := client.New(cfg)
	if err != nil {
		resp.Diagnostics.AddError("Invalid DebVisor client configuration", err.Error())
		return
	}
	// One cheap call now turns an unreachable agent or a refused certificate into one clear error,
	// instead of the same error on every resource.
	rctx, cancel := context.WithTimeout(ctx, pd.requestTimeout)
	defer cancel()
	if _, err := c.Node.GetNode(rctx, &v1.GetNodeRequest{}); err != nil {
		_ = c.Close()
		resp.Diagnostics.AddError("Cannot use the DebVisor agent at "+cfg.Endpoint, describe(cfg.Endpoint, err))
		return
	}
	pd.client = c
	resp.DataSourceData = pd
	resp.ResourceData = pd
}

func (p *DebVisorProvider) Resources(_ context.Context) []func() resource.Resource {
	return []func() resource.Resource{
		NewStoragePoolResource,
		NewVolumeResource,
		NewVMResource,
		NewNodeResource,
		NewNetworkResource,
	}
}

func (p *DebVisorProvider) DataSources(_ context.Context) []func() datasource.DataSource {
	return []func() datasource.DataSource{
		NewNodeDataSource,
		NewStoragePoolDataSource,
		NewClusterMembersDataSource,
	}
}
