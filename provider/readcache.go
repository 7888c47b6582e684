package provider

import (
	"context"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	v1 "github.com/debvisor/debvisor/api/debvisor/v1"
)

// readCacheTTL bounds how old a listed volume may be when a refresh uses it. The provider process
// lives for one CLI command, and every mutation it makes clears the cache, so staleness can only
// come from changes made elsewhere during the same refresh.
const readCacheTTL = 10 * time.Second

// volumeCache batches refreshes: one ListVolumes per pool serves the Read of every volume in it,
// instead of one GetVolume each. On the agent each volume read also works out which VMs use the
// volume by scanning every domain, so per-volume reads cost O(volumes × VMs) per plan and
// dominated the 200-resource plan (docs/benchmarks.md).
type volumeCache struct {
	mu    sync.Mutex
	pools map[string]*poolListing
}

type poolListing struct {
	done chan struct{} // closed when vols/err are set
	at   time.Time
	vols map[string]*v1.Volume
	err  error
}

// invalidate forgets every listing; resources call it after changing anything.
func (c *volumeCache) invalidate() {
	c.mu.Lock()
	c.pools = nil
	c.mu.Unlock()
}

// volume returns pool/name from a fresh-enough listing of pool, fetching it once for all callers.
func (p *providerData) cachedVolume(ctx context.Context, pool, name string) (*v1.Volume, error) {
	c := &p.volumes
	c.mu.Lock()
	if c.pools == nil {
		c.pools = map[string]*poolListing{}
	}
	l := c.pools[pool]
	if l == nil || (isClosed(l.done) && time.Since(l.at) > readCacheTTL) {
		l = &poolListing{done: make(chan struct{})}
		c.pools[pool] = l
		c.mu.Unlock()
		var res *v1.ListVolumesResponse
		err := p.read(ctx, "list volumes of pool "+pool, func(ctx context.Context) (err error) {
			res, err = p.client.Storage.ListVolumes(ctx, &v1.ListVolumesRequest{Pool: pool})
			return err
		})
		l.at, l.err = time.Now(), err
		if err == nil {
			l.vols = make(map[string]*v1.Volume, len(res.GetVolumes()))
			for _, v := range res.GetVolumes() {
				l.vols[v.GetName()] = v
			}
		}
		close(l.done)
	} else {
		c.mu.Unlock()
	}
	select {
	case <-l.done:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	if l.err != nil {
		return nil, l.err // NOT_FOUND here means the pool is gone, and so is the volume
	}
	v, ok := l.vols[name]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "volume %s/%s not found", pool, name)
	}
	return v, nil
}

func isClosed(ch chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}
