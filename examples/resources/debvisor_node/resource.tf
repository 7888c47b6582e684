# The node's operating system: changing image upgrades the node through its A/B slots and waits
# until the new slot is committed after the reboot (or fails with the reason it rolled back).
resource "debvisor_node" "this" {
  image = "registry.example:5000/debvisor/os:0.2.0"

  timeouts {
    update = "45m" # slow disks or a long health check; the default is 30m
  }
}

# Destroying it only removes it from the state: the node keeps running its image.
output "booted" {
  value = "${debvisor_node.this.booted_slot} runs ${debvisor_node.this.booted_version}"
}
