# A node is imported by its name (the name `dvctl status` and the debvisor_node data source show);
# image is then read from the booted slot's record.
terraform import debvisor_node.this node1
