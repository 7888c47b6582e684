# A blank 20 GiB qcow2 volume.
resource "debvisor_volume" "data" {
  pool           = debvisor_storage_pool.vms.id # .id: the plan-time pool check waits for the pool
  name           = "web-data"
  capacity_bytes = 20 * 1024 * 1024 * 1024
}

# A root disk filled from an OS image pushed to an OCI registry, grown to 40 GiB.
resource "debvisor_volume" "root" {
  pool           = "default" # an existing pool: checked at plan time
  name           = "web-root"
  oci_reference  = "registry.example.org/images/debian-cloud:12"
  capacity_bytes = 40 * 1024 * 1024 * 1024
}
