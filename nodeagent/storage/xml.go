package storage

import (
	"fmt"
	"net"
	"path/filepath"
	"strconv"

	"libvirt.org/go/libvirtxml"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// poolTypes maps the API's pool types to libvirt's.
var poolTypes = map[v1.Pool_Type]string{
	v1.Pool_TYPE_DIR:     "dir",
	v1.Pool_TYPE_FS:      "fs",
	v1.Pool_TYPE_LOGICAL: "logical",
	v1.Pool_TYPE_NETFS:   "netfs",
	v1.Pool_TYPE_ZFS:     "zfs",
	v1.Pool_TYPE_RBD:     "rbd",
}

func poolTypeOf(s string) v1.Pool_Type {
	for k, v := range poolTypes {
		if v == s {
			return k
		}
	}
	return v1.Pool_TYPE_UNSPECIFIED
}

// PoolXML validates a pool spec and returns libvirt's pool definition for
// it. Errors are InvalidArgument naming the pool.* field.
func PoolXML(p *v1.Pool) (*libvirtxml.StoragePool, error) {
	if p == nil {
		return nil, Invalid("pool", "must be set")
	}
	if err := CheckName("pool.name", p.GetName()); err != nil {
		return nil, err
	}
	typ, ok := poolTypes[p.GetType()]
	if !ok {
		return nil, Invalid("pool.type", "must be one of dir, fs, logical, netfs, zfs, rbd")
	}
	x := &libvirtxml.StoragePool{Type: typ, Name: p.GetName()}
	srcName := p.GetSourceName()
	if srcName == "" {
		srcName = p.GetName()
	}
	needPath := func() error {
		if !filepath.IsAbs(p.GetPath()) || filepath.Clean(p.GetPath()) != p.GetPath() {
			return Invalid("pool.path", "%q must be a clean absolute path", p.GetPath())
		}
		x.Target = &libvirtxml.StoragePoolTarget{Path: p.GetPath()}
		return nil
	}
	devices := func(min, max int) error {
		n := len(p.GetSourceDevices())
		if n < min || (max > 0 && n > max) {
			return Invalid("pool.source_devices", "%s pools take %d to %d devices (got %d)", typ, min, max, n)
		}
		for i, d := range p.GetSourceDevices() {
			if !filepath.IsAbs(d) {
				return Invalid("pool.source_devices["+strconv.Itoa(i)+"]", "%q must be an absolute device path", d)
			}
			x.Source.Device = append(x.Source.Device, libvirtxml.StoragePoolSourceDevice{Path: d})
		}
		return nil
	}
	hosts := func(min, max int) error {
		n := len(p.GetSourceHosts())
		if n < min || (max > 0 && n > max) {
			return Invalid("pool.source_hosts", "%s pools need %d to %d hosts (got %d)", typ, min, max, n)
		}
		for i, h := range p.GetSourceHosts() {
			host, port := h, ""
			if hh, pp, err := net.SplitHostPort(h); err == nil {
				host, port = hh, pp
				if n, err := strconv.Atoi(pp); err != nil || n < 1 || n > 65535 {
					return Invalid("pool.source_hosts["+strconv.Itoa(i)+"]", "%q has an invalid port", h)
				}
			}
			if host == "" {
				return Invalid("pool.source_hosts["+strconv.Itoa(i)+"]", "must not be empty")
			}
			x.Source.Host = append(x.Source.Host, libvirtxml.StoragePoolSourceHost{Name: host, Port: port})
		}
		return nil
	}
	x.Source = &libvirtxml.StoragePoolSource{}
	var err error
	switch p.GetType() {
	case v1.Pool_TYPE_DIR:
		x.Source = nil
		err = needPath()
	case v1.Pool_TYPE_FS:
		if err = needPath(); err == nil {
			err = devices(1, 1)
		}
		f := p.GetSourceFormat()
		if f == "" {
			f = "auto"
		}
		x.Source.Format = &libvirtxml.StoragePoolSourceFormat{Type: f}
	case v1.Pool_TYPE_NETFS:
		if err = needPath(); err == nil {
			err = hosts(1, 1)
		}
		if err == nil && !filepath.IsAbs(p.GetSourcePath()) {
			err = Invalid("pool.source_path", "the exported directory %q must be absolute", p.GetSourcePath())
		}
		f := p.GetSourceFormat()
		if f == "" {
			f = "nfs"
		}
		if f != "nfs" && f != "cifs" && f != "glusterfs" {
			err = Invalid("pool.source_format", "%q is not nfs, cifs or glusterfs", f)
		}
		x.Source.Dir = &libvirtxml.StoragePoolSourceDir{Path: p.GetSourcePath()}
		x.Source.Format = &libvirtxml.StoragePoolSourceFormat{Type: f}
	case v1.Pool_TYPE_LOGICAL:
		if err = CheckName("pool.source_name", srcName); err == nil {
			err = devices(0, 0)
		}
		x.Source.Name = srcName
		x.Source.Format = &libvirtxml.StoragePoolSourceFormat{Type: "lvm2"}
		path := p.GetPath()
		if path == "" {
			path = "/dev/" + srcName
		}
		x.Target = &libvirtxml.StoragePoolTarget{Path: path}
	case v1.Pool_TYPE_ZFS:
		// libvirt's schema allows one device: it creates a single-vdev
		// zpool. Multi-vdev pools are made with zpool and named here.
		if err = CheckName("pool.source_name", srcName); err == nil {
			err = devices(0, 1)
		}
		x.Source.Name = srcName
	case v1.Pool_TYPE_RBD:
		if err = CheckName("pool.source_name", srcName); err == nil {
			err = hosts(1, 16)
		}
		x.Source.Name = srcName
		if p.GetAuthUsername() != "" || p.GetAuthSecretUuid() != "" {
			if p.GetAuthUsername() == "" || p.GetAuthSecretUuid() == "" {
				err = Invalid("pool.auth_username", "cephx needs both auth_username and auth_secret_uuid")
			}
			x.Source.Auth = &libvirtxml.StoragePoolSourceAuth{
				Type: "ceph", Username: p.GetAuthUsername(),
				Secret: &libvirtxml.StoragePoolSourceAuthSecret{UUID: p.GetAuthSecretUuid()},
			}
		}
	}
	if err != nil {
		return nil, err
	}
	return x, nil
}

// volumeFormats maps the API's formats to libvirt's.
var volumeFormats = map[v1.Volume_Format]string{
	v1.Volume_FORMAT_UNSPECIFIED: "raw",
	v1.Volume_FORMAT_RAW:         "raw",
	v1.Volume_FORMAT_QCOW2:       "qcow2",
}

func formatOf(s string) v1.Volume_Format {
	if s == "qcow2" {
		return v1.Volume_FORMAT_QCOW2
	}
	return v1.Volume_FORMAT_RAW
}

// VolumeXML returns libvirt's volume definition. Pools that hold only raw
// volumes (logical, zfs, rbd) get no format element.
func VolumeXML(poolType, name string, f v1.Volume_Format, capacity int64) (*libvirtxml.StorageVolume, error) {
	format, ok := volumeFormats[f]
	if !ok {
		return nil, Invalid("volume.format", "%d is not raw or qcow2", f)
	}
	x := &libvirtxml.StorageVolume{
		Name:     name,
		Capacity: &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: uint64(capacity)},
	}
	switch poolType {
	case "dir", "fs", "netfs":
		x.Target = &libvirtxml.StorageVolumeTarget{Format: &libvirtxml.StorageVolumeTargetFormat{Type: format}}
		if format == "raw" {
			// Sparse: allocate nothing up front.
			x.Allocation = &libvirtxml.StorageVolumeSize{Unit: "bytes", Value: 0}
		}
	default:
		if format != "raw" {
			return nil, Invalid("volume.format", "%s pools hold raw volumes only", poolType)
		}
		x.Target = &libvirtxml.StorageVolumeTarget{} // required by the schema, even empty
	}
	return x, nil
}

func marshal(x interface{ Marshal() (string, error) }, what string) (string, error) {
	s, err := x.Marshal()
	if err != nil {
		return "", fmt.Errorf("marshal %s XML: %w", what, err)
	}
	return s, nil
}
