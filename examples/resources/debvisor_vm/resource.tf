resource "debvisor_vm" "web" {
  name           = "web"
  vcpus          = 2
  max_vcpus      = 4 # hot-add up to 4 without a restart
  memory_mib     = 2048
  max_memory_mib = 4096 # balloon up to 4 GiB live
  firmware       = "bios"
  power_state    = "running"

  disks = [
    { pool = debvisor_volume.root.pool, volume = debvisor_volume.root.name, boot_order = 1 },
    { pool = debvisor_volume.data.pool, volume = debvisor_volume.data.name },
  ]

  nics = [
    { type = "bridge", bridge = "br0" },
  ]

  cloud_init = {
    user_data = <<-EOT
      #cloud-config
      packages: [nginx, qemu-guest-agent]
      runcmd: [[systemctl, enable, --now, qemu-guest-agent]]
    EOT
  }

  # Wait for the guest agent (or a DHCP lease) to report an address while creating.
  wait_for_ip = true

  timeouts {
    create = "10m"
  }
}

output "web_ip" {
  value = debvisor_vm.web.ip_addresses
}
