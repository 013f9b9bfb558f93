package vk

import (
	"os"
	"strconv"
	"sync"
	"unsafe"

	vulkan "github.com/vulkan-go/vulkan"
)

// memCache keeps the buffers and device memory of closed Buffers for NewBuffer to hand
// out again at the same size. A call that allocates its scratch per call (a backward's
// gradients and packed keys, a long prefill's plan) would otherwise pay vkAllocateMemory
// and vkFreeMemory every time: on a discrete GPU they take milliseconds for large
// buffers (the driver clears new pages), several times a call's GPU time, and the GPU
// idles (and lowers its clock) meanwhile. The cache holds at most limit bytes, the
// oldest entries freed first; a failed allocation empties it and tries again.
type memCache struct {
	mu    sync.Mutex
	limit int64
	bytes int64
	seq   uint64
	free  map[memKey][]cachedMem // newest last
}

// memKey is what a reused buffer must match: its size and what it was made for.
type memKey struct {
	size int64
	kind memKind
}

// memKind is the memory (and usage) a buffer asked for.
type memKind uint8

const (
	memPlain   memKind = iota // NewBuffer
	memStaging                // host-visible staging
	memMapped                 // NewMappedBuffer
)

type cachedMem struct {
	buf    vulkan.Buffer
	mem    vulkan.DeviceMemory
	alloc  int64
	mapped unsafe.Pointer
	seq    uint64 // age: lower is older
}

// defaultMemCacheLimit is the cache's size on a device: an eighth of the largest
// device-local heap, at most 4 GiB, on discrete GPUs; nothing elsewhere (there device
// memory is the host's, and allocating it is cheap). DMAVK_MEMORY_CACHE (MiB)
// overrides it.
func defaultMemCacheLimit(c *Caps) int64 {
	if v := os.Getenv("DMAVK_MEMORY_CACHE"); v != "" {
		if mib, err := strconv.ParseInt(v, 10, 64); err == nil && mib >= 0 {
			return mib << 20
		}
	}
	if c.Type != DeviceDiscrete {
		return 0
	}
	var heap uint64
	for _, h := range c.Heaps {
		if h.DeviceLocal {
			heap = max(heap, h.Size)
		}
	}
	return min(int64(heap/8), 4<<30)
}

// SetMemoryCache sets how many bytes of closed buffers the device keeps for reuse by
// NewBuffer (0: none; freed at once), freeing the oldest beyond it. The default is an
// eighth of the device-local memory, at most 4 GiB, on discrete GPUs and none on other
// devices (DMAVK_MEMORY_CACHE, in MiB, changes the default).
func (d *Device) SetMemoryCache(limit int64) {
	d.memc.mu.Lock()
	d.memc.limit = max(limit, 0)
	drop := d.memc.trim()
	d.memc.mu.Unlock()
	d.freeCached(drop)
}

// take returns a cached buffer for k, if there is one.
func (c *memCache) take(k memKey) (cachedMem, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	l := c.free[k]
	if len(l) == 0 {
		return cachedMem{}, false
	}
	m := l[len(l)-1]
	c.free[k] = l[:len(l)-1]
	if len(c.free[k]) == 0 {
		delete(c.free, k)
	}
	c.bytes -= m.alloc
	return m, true
}

// put keeps m for k unless it is larger than the limit; it returns what no longer fits
// (m itself, or older entries), for the caller to free outside the lock.
func (c *memCache) put(k memKey, m cachedMem) []cachedMem {
	c.mu.Lock()
	defer c.mu.Unlock()
	if m.alloc > c.limit {
		return []cachedMem{m}
	}
	if c.free == nil {
		c.free = map[memKey][]cachedMem{}
	}
	c.seq++
	m.seq = c.seq
	c.free[k] = append(c.free[k], m)
	c.bytes += m.alloc
	return c.trim()
}

// trim removes the oldest entries until the cache fits its limit (c.mu held).
func (c *memCache) trim() []cachedMem {
	var drop []cachedMem
	for c.bytes > c.limit {
		var oldest memKey
		found := false
		for k, l := range c.free {
			if !found || l[0].seq < c.free[oldest][0].seq {
				oldest, found = k, true
			}
		}
		l := c.free[oldest]
		drop = append(drop, l[0])
		c.bytes -= l[0].alloc
		if len(l) == 1 {
			delete(c.free, oldest)
		} else {
			c.free[oldest] = l[1:]
		}
	}
	return drop
}

// empty removes every entry.
func (c *memCache) empty() []cachedMem {
	c.mu.Lock()
	defer c.mu.Unlock()
	var drop []cachedMem
	for _, l := range c.free {
		drop = append(drop, l...)
	}
	c.free, c.bytes = nil, 0
	return drop
}

// cached is the bytes the cache holds.
func (c *memCache) cached() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.bytes
}

// freeCached destroys buffers the cache let go of.
func (d *Device) freeCached(ms []cachedMem) {
	for _, m := range ms {
		if m.mapped != nil {
			vulkan.UnmapMemory(d.dev, m.mem)
		}
		vulkan.DestroyBuffer(d.dev, m.buf, nil)
		vulkan.FreeMemory(d.dev, m.mem, nil)
	}
}
