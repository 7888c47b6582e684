data "debvisor_node" "this" {}

output "node" {
  value = "${data.debvisor_node.this.name} runs DebVisor ${data.debvisor_node.this.os_version} from slot ${data.debvisor_node.this.booted_slot}"
}
