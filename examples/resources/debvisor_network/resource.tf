# The node's host network: a bond of two NICs carrying a tagged VLAN for storage, and the bridge
# VMs plug into on top of the bond. Every change is applied with a confirm deadline and confirmed
# by the provider through a new connection; if the change cuts the node off, it reverts itself.
resource "debvisor_network" "this" {
  confirm_timeout = "90s"

  bonds = [{
    name    = "bond0"
    mode    = "802.3ad"
    members = ["enp1s0", "enp2s0"]
  }]

  vlans = [{
    name   = "storage"
    parent = "bond0"
    id     = 20
  }]

  bridges = [{
    name  = "br0"
    ports = ["bond0"]
  }]

  interfaces = [
    {
      name      = "br0"
      addresses = ["192.0.2.10/24"]
      gateway4  = "192.0.2.1"
    },
    {
      name      = "storage"
      addresses = ["10.20.0.10/24"]
      mtu       = 9000
    },
  ]

  routes = [{
    destination = "10.30.0.0/16"
    gateway     = "10.20.0.1"
    interface   = "storage"
  }]

  dns_servers = ["192.0.2.53", "2001:db8::53"]
}

# Destroying it applies an empty configuration (bond, VLAN and bridge deleted, addresses and
# routes removed), confirmed the same way. To stop managing the network without changing it,
# `terraform state rm debvisor_network.this` instead.
