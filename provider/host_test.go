package provider

// prepareHost makes sure what the agent drives (libvirtd) is running before the agent starts.
func prepareHost() error { return nil }
