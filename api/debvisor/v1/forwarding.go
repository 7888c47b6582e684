package debvisorv1

// NodeMetadataKey is the gRPC metadata key that asks the agent receiving a
// call to forward it to the cluster member with that name (as Talos's
// "nodes" key does). Over REST it is the header "Grpc-Metadata-Debvisor-Node".
// A call without it, or naming the receiving node, is served locally.
const NodeMetadataKey = "debvisor-node"
