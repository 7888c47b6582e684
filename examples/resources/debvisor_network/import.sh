# A node's network is imported by the node's name (the name `dvctl status` and the debvisor_node
# data source show); the configuration is read from what the node persists.
terraform import debvisor_network.this node1
