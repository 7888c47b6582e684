data "debvisor_cluster_members" "all" {}

output "members" {
  value = data.debvisor_cluster_members.all.names
}

# Every member's API endpoint, e.g. to configure one provider per node.
output "endpoints" {
  value = { for m in data.debvisor_cluster_members.all.members : m.name => m.api_address }
}
