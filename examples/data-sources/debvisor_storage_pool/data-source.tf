# A pool shared by several configurations (or made by the installer): read it, don't manage it.
data "debvisor_storage_pool" "shared" {
  name = "default"
}

resource "debvisor_volume" "scratch" {
  pool           = data.debvisor_storage_pool.shared.name
  name           = "scratch"
  capacity_bytes = 1024 * 1024 * 1024
}

output "free_bytes" {
  value = data.debvisor_storage_pool.shared.available_bytes
}
