# A directory pool; the node creates the directory (build = true is the default).
resource "debvisor_storage_pool" "vms" {
  name = "vms"
  type = "dir"
  path = "/var/lib/debvisor/pools/vms"
}

# An LVM volume group made from two disks (pvcreate + vgcreate: destroys their data).
resource "debvisor_storage_pool" "fast" {
  name           = "fast"
  type           = "logical"
  source_devices = ["/dev/nvme0n1", "/dev/nvme1n1"]
  format_source  = true
}
