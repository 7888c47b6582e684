package libvirtconn

import (
	"context"
	"io"
	"time"

	"github.com/digitalocean/go-libvirt"

	"github.com/debvisor/debvisor/nodeagent/fault"
)

// Client is one connection to libvirtd bound to a caller's context. Its
// methods are go-libvirt's (same names and arguments, so code reads like
// libvirt's API), but every call returns by a deadline: the connection's
// call timeout or the context's end, whichever comes first. go-libvirt has
// no per-call cancellation and libvirtd's RPC protocol none either, so a
// call that runs out of time is abandoned, not stopped: libvirtd finishes
// it and its answer is dropped. Callers that must undo something after a
// cancellation use Detached.
//
// A Client is short-lived: get one per request or operation from Conn.
type Client struct {
	lv   *libvirt.Libvirt
	ctx  context.Context //nolint:containedctx // a Client is a per-request binding of a connection to its caller's context
	lane *lane
}

// Detached returns the same connection bound to a context that keeps ctx's
// values but not its cancellation, for undoing a half-made change after the
// caller gave up. Each call still has the connection's timeout.
func (c *Client) Detached() *Client {
	return &Client{lv: c.lv, ctx: context.WithoutCancel(c.ctx), lane: c.lane}
}

// result carries a call's return values through the channel, so an
// abandoned call never writes to its caller's variables.
type result[A, B, C, D any] struct {
	a   A
	b   B
	c   C
	d   D
	err error
}

// call runs fn on the connection once a slot is free and waits for its
// answer until the call's deadline. long calls (copies, streams) have no
// deadline of their own and wait for as long as the context allows.
func call[A, B, C, D any](c *Client, proc string, long bool, fn func(lv *libvirt.Libvirt) result[A, B, C, D]) result[A, B, C, D] {
	fail := func(err error) result[A, B, C, D] { return result[A, B, C, D]{err: err} }
	l := c.lane
	if err := c.ctx.Err(); err != nil {
		return fail(fault.Wrap(err, "libvirt %s", proc))
	}
	start := time.Now()
	var expired <-chan time.Time
	if l.boundedQueue && !long {
		t := time.NewTimer(l.timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case l.slots <- struct{}{}:
	case <-expired:
		return fail(fault.Errorf(fault.Unavailable,
			"libvirtd did not answer %s within %s: all %d calls the agent may have in flight on its %s connection are still unanswered (libvirtd is overloaded or stuck)",
			proc, l.timeout, cap(l.slots), l.name))
	case <-c.ctx.Done():
		return fail(fault.Wrap(c.ctx.Err(), "waiting to send %s to libvirtd", proc))
	}
	done := make(chan result[A, B, C, D], 1)
	go func() {
		defer func() { <-l.slots }()
		done <- fn(c.lv)
	}()
	if !long && expired == nil {
		t := time.NewTimer(l.timeout)
		defer t.Stop()
		expired = t.C
	}
	select {
	case r := <-done:
		return r
	case <-expired:
		return fail(fault.Errorf(fault.Unavailable,
			"libvirtd did not answer %s within %s on the agent's %s connection: libvirtd is overloaded or stuck",
			proc, time.Since(start).Round(time.Millisecond), l.name))
	case <-c.ctx.Done():
		return fail(fault.Wrap(c.ctx.Err(), "waiting for libvirtd to answer %s", proc))
	}
}

// none is the unused slot of a result.
type none struct{}

func call0(c *Client, proc string, long bool, fn func(lv *libvirt.Libvirt) error) error {
	return call(c, proc, long, func(lv *libvirt.Libvirt) result[none, none, none, none] {
		return result[none, none, none, none]{err: fn(lv)}
	}).err
}

func call1[A any](c *Client, proc string, fn func(lv *libvirt.Libvirt) (A, error)) (A, error) {
	r := call(c, proc, false, func(lv *libvirt.Libvirt) result[A, none, none, none] {
		a, err := fn(lv)
		return result[A, none, none, none]{a: a, err: err}
	})
	return r.a, r.err
}

func call2[A, B any](c *Client, proc string, fn func(lv *libvirt.Libvirt) (A, B, error)) (A, B, error) {
	r := call(c, proc, false, func(lv *libvirt.Libvirt) result[A, B, none, none] {
		a, b, err := fn(lv)
		return result[A, B, none, none]{a: a, b: b, err: err}
	})
	return r.a, r.b, r.err
}

// Connection.

func (c *Client) Capabilities() ([]byte, error) {
	return call1(c, "Capabilities", func(lv *libvirt.Libvirt) ([]byte, error) { return lv.Capabilities() })
}

func (c *Client) ConnectGetLibVersion() (uint64, error) {
	return call1(c, "ConnectGetLibVersion", func(lv *libvirt.Libvirt) (uint64, error) { return lv.ConnectGetLibVersion() })
}

func (c *Client) ConnectListAllDomains(needResults int32, flags libvirt.ConnectListAllDomainsFlags) ([]libvirt.Domain, uint32, error) {
	return call2(c, "ConnectListAllDomains", func(lv *libvirt.Libvirt) ([]libvirt.Domain, uint32, error) {
		return lv.ConnectListAllDomains(needResults, flags)
	})
}

func (c *Client) ConnectListAllStoragePools(needResults int32, flags libvirt.ConnectListAllStoragePoolsFlags) ([]libvirt.StoragePool, uint32, error) {
	return call2(c, "ConnectListAllStoragePools", func(lv *libvirt.Libvirt) ([]libvirt.StoragePool, uint32, error) {
		return lv.ConnectListAllStoragePools(needResults, flags)
	})
}

// Domains.

func (c *Client) DomainLookupByName(name string) (libvirt.Domain, error) {
	return call1(c, "DomainLookupByName", func(lv *libvirt.Libvirt) (libvirt.Domain, error) { return lv.DomainLookupByName(name) })
}

func (c *Client) DomainGetState(d libvirt.Domain, flags uint32) (int32, int32, error) {
	return call2(c, "DomainGetState", func(lv *libvirt.Libvirt) (int32, int32, error) { return lv.DomainGetState(d, flags) })
}

func (c *Client) DomainGetXMLDesc(d libvirt.Domain, flags libvirt.DomainXMLFlags) (string, error) {
	return call1(c, "DomainGetXMLDesc", func(lv *libvirt.Libvirt) (string, error) { return lv.DomainGetXMLDesc(d, flags) })
}

func (c *Client) DomainGetAutostart(d libvirt.Domain) (int32, error) {
	return call1(c, "DomainGetAutostart", func(lv *libvirt.Libvirt) (int32, error) { return lv.DomainGetAutostart(d) })
}

func (c *Client) DomainInterfaceAddresses(d libvirt.Domain, source, flags uint32) ([]libvirt.DomainInterface, error) {
	return call1(c, "DomainInterfaceAddresses", func(lv *libvirt.Libvirt) ([]libvirt.DomainInterface, error) {
		return lv.DomainInterfaceAddresses(d, source, flags)
	})
}

func (c *Client) DomainDefineXMLFlags(xml string, flags libvirt.DomainDefineFlags) (libvirt.Domain, error) {
	return call1(c, "DomainDefineXMLFlags", func(lv *libvirt.Libvirt) (libvirt.Domain, error) { return lv.DomainDefineXMLFlags(xml, flags) })
}

func (c *Client) DomainCreateWithFlags(d libvirt.Domain, flags uint32) (libvirt.Domain, error) {
	return call1(c, "DomainCreateWithFlags", func(lv *libvirt.Libvirt) (libvirt.Domain, error) { return lv.DomainCreateWithFlags(d, flags) })
}

func (c *Client) DomainSetAutostart(d libvirt.Domain, autostart int32) error {
	return call0(c, "DomainSetAutostart", false, func(lv *libvirt.Libvirt) error { return lv.DomainSetAutostart(d, autostart) })
}

func (c *Client) DomainAttachDeviceFlags(d libvirt.Domain, xml string, flags uint32) error {
	return call0(c, "DomainAttachDeviceFlags", false, func(lv *libvirt.Libvirt) error { return lv.DomainAttachDeviceFlags(d, xml, flags) })
}

func (c *Client) DomainDetachDeviceFlags(d libvirt.Domain, xml string, flags uint32) error {
	return call0(c, "DomainDetachDeviceFlags", false, func(lv *libvirt.Libvirt) error { return lv.DomainDetachDeviceFlags(d, xml, flags) })
}

func (c *Client) DomainSetVcpusFlags(d libvirt.Domain, n, flags uint32) error {
	return call0(c, "DomainSetVcpusFlags", false, func(lv *libvirt.Libvirt) error { return lv.DomainSetVcpusFlags(d, n, flags) })
}

func (c *Client) DomainSetMemoryFlags(d libvirt.Domain, memory uint64, flags uint32) error {
	return call0(c, "DomainSetMemoryFlags", false, func(lv *libvirt.Libvirt) error { return lv.DomainSetMemoryFlags(d, memory, flags) })
}

func (c *Client) DomainShutdownFlags(d libvirt.Domain, flags libvirt.DomainShutdownFlagValues) error {
	return call0(c, "DomainShutdownFlags", false, func(lv *libvirt.Libvirt) error { return lv.DomainShutdownFlags(d, flags) })
}

func (c *Client) DomainDestroy(d libvirt.Domain) error {
	return call0(c, "DomainDestroy", false, func(lv *libvirt.Libvirt) error { return lv.DomainDestroy(d) })
}

func (c *Client) DomainDestroyFlags(d libvirt.Domain, flags libvirt.DomainDestroyFlagsValues) error {
	return call0(c, "DomainDestroyFlags", false, func(lv *libvirt.Libvirt) error { return lv.DomainDestroyFlags(d, flags) })
}

func (c *Client) DomainUndefineFlags(d libvirt.Domain, flags libvirt.DomainUndefineFlagsValues) error {
	return call0(c, "DomainUndefineFlags", false, func(lv *libvirt.Libvirt) error { return lv.DomainUndefineFlags(d, flags) })
}

func (c *Client) DomainReboot(d libvirt.Domain, flags libvirt.DomainRebootFlagValues) error {
	return call0(c, "DomainReboot", false, func(lv *libvirt.Libvirt) error { return lv.DomainReboot(d, flags) })
}

func (c *Client) DomainReset(d libvirt.Domain, flags uint32) error {
	return call0(c, "DomainReset", false, func(lv *libvirt.Libvirt) error { return lv.DomainReset(d, flags) })
}

func (c *Client) DomainResume(d libvirt.Domain) error {
	return call0(c, "DomainResume", false, func(lv *libvirt.Libvirt) error { return lv.DomainResume(d) })
}

// Storage pools.

func (c *Client) StoragePoolLookupByName(name string) (libvirt.StoragePool, error) {
	return call1(c, "StoragePoolLookupByName", func(lv *libvirt.Libvirt) (libvirt.StoragePool, error) { return lv.StoragePoolLookupByName(name) })
}

func (c *Client) StoragePoolGetInfo(p libvirt.StoragePool) (state uint8, capacity, allocation, available uint64, err error) {
	r := call(c, "StoragePoolGetInfo", false, func(lv *libvirt.Libvirt) result[uint8, uint64, uint64, uint64] {
		s, cp, al, av, err := lv.StoragePoolGetInfo(p)
		return result[uint8, uint64, uint64, uint64]{a: s, b: cp, c: al, d: av, err: err}
	})
	return r.a, r.b, r.c, r.d, r.err
}

func (c *Client) StoragePoolGetXMLDesc(p libvirt.StoragePool, flags libvirt.StorageXMLFlags) (string, error) {
	return call1(c, "StoragePoolGetXMLDesc", func(lv *libvirt.Libvirt) (string, error) { return lv.StoragePoolGetXMLDesc(p, flags) })
}

func (c *Client) StoragePoolGetAutostart(p libvirt.StoragePool) (int32, error) {
	return call1(c, "StoragePoolGetAutostart", func(lv *libvirt.Libvirt) (int32, error) { return lv.StoragePoolGetAutostart(p) })
}

func (c *Client) StoragePoolNumOfVolumes(p libvirt.StoragePool) (int32, error) {
	return call1(c, "StoragePoolNumOfVolumes", func(lv *libvirt.Libvirt) (int32, error) { return lv.StoragePoolNumOfVolumes(p) })
}

func (c *Client) StoragePoolListAllVolumes(p libvirt.StoragePool, needResults int32, flags uint32) ([]libvirt.StorageVol, uint32, error) {
	return call2(c, "StoragePoolListAllVolumes", func(lv *libvirt.Libvirt) ([]libvirt.StorageVol, uint32, error) {
		return lv.StoragePoolListAllVolumes(p, needResults, flags)
	})
}

func (c *Client) StoragePoolDefineXML(xml string, flags uint32) (libvirt.StoragePool, error) {
	return call1(c, "StoragePoolDefineXML", func(lv *libvirt.Libvirt) (libvirt.StoragePool, error) { return lv.StoragePoolDefineXML(xml, flags) })
}

// StoragePoolBuild may format devices (mkfs, vgcreate): a long call.
func (c *Client) StoragePoolBuild(p libvirt.StoragePool, flags libvirt.StoragePoolBuildFlags) error {
	return call0(c, "StoragePoolBuild", true, func(lv *libvirt.Libvirt) error { return lv.StoragePoolBuild(p, flags) })
}

func (c *Client) StoragePoolCreate(p libvirt.StoragePool, flags libvirt.StoragePoolCreateFlags) error {
	return call0(c, "StoragePoolCreate", false, func(lv *libvirt.Libvirt) error { return lv.StoragePoolCreate(p, flags) })
}

func (c *Client) StoragePoolSetAutostart(p libvirt.StoragePool, autostart int32) error {
	return call0(c, "StoragePoolSetAutostart", false, func(lv *libvirt.Libvirt) error { return lv.StoragePoolSetAutostart(p, autostart) })
}

func (c *Client) StoragePoolRefresh(p libvirt.StoragePool, flags uint32) error {
	return call0(c, "StoragePoolRefresh", false, func(lv *libvirt.Libvirt) error { return lv.StoragePoolRefresh(p, flags) })
}

func (c *Client) StoragePoolDestroy(p libvirt.StoragePool) error {
	return call0(c, "StoragePoolDestroy", false, func(lv *libvirt.Libvirt) error { return lv.StoragePoolDestroy(p) })
}

// StoragePoolDelete removes the pool's storage (a directory tree, a volume
// group): a long call.
func (c *Client) StoragePoolDelete(p libvirt.StoragePool, flags libvirt.StoragePoolDeleteFlags) error {
	return call0(c, "StoragePoolDelete", true, func(lv *libvirt.Libvirt) error { return lv.StoragePoolDelete(p, flags) })
}

func (c *Client) StoragePoolUndefine(p libvirt.StoragePool) error {
	return call0(c, "StoragePoolUndefine", false, func(lv *libvirt.Libvirt) error { return lv.StoragePoolUndefine(p) })
}

// Storage volumes.

func (c *Client) StorageVolLookupByName(p libvirt.StoragePool, name string) (libvirt.StorageVol, error) {
	return call1(c, "StorageVolLookupByName", func(lv *libvirt.Libvirt) (libvirt.StorageVol, error) { return lv.StorageVolLookupByName(p, name) })
}

func (c *Client) StorageVolGetXMLDesc(v libvirt.StorageVol, flags uint32) (string, error) {
	return call1(c, "StorageVolGetXMLDesc", func(lv *libvirt.Libvirt) (string, error) { return lv.StorageVolGetXMLDesc(v, flags) })
}

func (c *Client) StorageVolGetInfo(v libvirt.StorageVol) (typ int8, capacity, allocation uint64, err error) {
	r := call(c, "StorageVolGetInfo", false, func(lv *libvirt.Libvirt) result[int8, uint64, uint64, none] {
		t, cp, al, err := lv.StorageVolGetInfo(v)
		return result[int8, uint64, uint64, none]{a: t, b: cp, c: al, err: err}
	})
	return r.a, r.b, r.c, r.err
}

// StorageVolCreateXML may allocate the whole volume: a long call.
func (c *Client) StorageVolCreateXML(p libvirt.StoragePool, xml string, flags libvirt.StorageVolCreateFlags) (libvirt.StorageVol, error) {
	r := call(c, "StorageVolCreateXML", true, func(lv *libvirt.Libvirt) result[libvirt.StorageVol, none, none, none] {
		v, err := lv.StorageVolCreateXML(p, xml, flags)
		return result[libvirt.StorageVol, none, none, none]{a: v, err: err}
	})
	return r.a, r.err
}

// StorageVolCreateXMLFrom copies a whole volume: a long call.
func (c *Client) StorageVolCreateXMLFrom(p libvirt.StoragePool, xml string, from libvirt.StorageVol, flags libvirt.StorageVolCreateFlags) (libvirt.StorageVol, error) {
	r := call(c, "StorageVolCreateXMLFrom", true, func(lv *libvirt.Libvirt) result[libvirt.StorageVol, none, none, none] {
		v, err := lv.StorageVolCreateXMLFrom(p, xml, from, flags)
		return result[libvirt.StorageVol, none, none, none]{a: v, err: err}
	})
	return r.a, r.err
}

// StorageVolUpload streams the volume's content from r: a long call.
func (c *Client) StorageVolUpload(v libvirt.StorageVol, r io.Reader, offset, length uint64, flags libvirt.StorageVolUploadFlags) error {
	return call0(c, "StorageVolUpload", true, func(lv *libvirt.Libvirt) error { return lv.StorageVolUpload(v, r, offset, length, flags) })
}

func (c *Client) StorageVolResize(v libvirt.StorageVol, capacity uint64, flags libvirt.StorageVolResizeFlags) error {
	return call0(c, "StorageVolResize", true, func(lv *libvirt.Libvirt) error { return lv.StorageVolResize(v, capacity, flags) })
}

func (c *Client) StorageVolDelete(v libvirt.StorageVol, flags libvirt.StorageVolDeleteFlags) error {
	return call0(c, "StorageVolDelete", false, func(lv *libvirt.Libvirt) error { return lv.StorageVolDelete(v, flags) })
}
