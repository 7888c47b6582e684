# The quickstart: a pool, a volume and a VM on the node `make quickstart` started.
# The provider reads DEBVISOR_ENDPOINT, DEBVISOR_CA, DEBVISOR_CERT and DEBVISOR_KEY from the
# environment (scripts/quickstart.d/50-terraform sets them).
terraform {
  required_providers {
    debvisor = {
      source = "debvisor/debvisor"
    }
  }
}

provider "debvisor" {}

variable "pool_path" {
  description = "Directory on the node for the quickstart pool."
  type        = string
}

data "debvisor_node" "this" {}

resource "debvisor_storage_pool" "quickstart" {
  name           = "quickstart"
  path           = var.pool_path
  force_destroy  = true
  delete_storage = true
}

resource "debvisor_volume" "root" {
  pool           = debvisor_storage_pool.quickstart.id
  name           = "hello-root"
  capacity_bytes = 256 * 1024 * 1024
}

resource "debvisor_vm" "hello" {
  name       = "hello"
  vcpus      = 1
  memory_mib = 128

  disks = [{ pool = debvisor_volume.root.pool, volume = debvisor_volume.root.name, boot_order = 1 }]
  nics  = [{ type = "user" }]

  cloud_init = {
    user_data = "#cloud-config\nhostname: hello\n"
  }
}

output "node" {
  value = "${data.debvisor_node.this.name} (agent ${data.debvisor_node.this.agent_version})"
}

output "vm" {
  value = "${debvisor_vm.hello.name} is ${debvisor_vm.hello.state} on ${debvisor_vm.hello.hypervisor}, uuid ${debvisor_vm.hello.uuid}"
}
