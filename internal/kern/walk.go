package kern

import (
	"container/heap"
	"slices"
)

// WalkCount is what the coopmat2 attention's tiles walk over the packed kept keys in
// mode row, causal, against what their rows keep.
type WalkCount struct {
	Walked int64 // (tile row, packed entry) pairs the products cover, whole chunks
	Kept   int64 // (row, key) pairs the rows keep
}

// Dropped is the share of walked pairs that no row keeps, relative to the kept ones:
// (Walked - Kept) / Kept.
func (c WalkCount) Dropped() float64 {
	if c.Kept == 0 {
		return 0
	}
	return float64(c.Walked-c.Kept) / float64(c.Kept)
}

// Add sums two counts.
func (c WalkCount) Add(o WalkCount) WalkCount {
	return WalkCount{c.Walked + o.Walked, c.Kept + o.Kept}
}

// CountWalk counts, on the CPU, what tiles of br rows walking chunks of bc entries do
// over one (batch, bias head) in mode row, causal, with Lq = Lk = len(ord) (a prefill)
// and window w: a tile of rows in block b walks U_b (doc.go) down to its lowest
// threshold, in whole chunks, while each row keeps min(w, its valid prefix) keys. The
// walked pairs the rows drop are keys of block b after a row's position that rank above
// the tile's lowest threshold, entries between a row's threshold and the tile's lowest
// one, and the last chunk's padding. O(L log w) time, O(w + C) memory at a time.
func CountWalk(ord []uint32, w, br, bc int) WalkCount {
	var n WalkCount
	lk := len(ord)
	if lk == 0 || w < 1 || br < 1 || bc < 1 {
		return n
	}
	c := BlockSize(w)
	var s []Key           // S_b, sorted descending
	var top keyHeap       // the w best valid keys of [0, p], worst first
	tau := make([]Key, c) // per row of the block: its threshold, zero when it keeps all
	kept := make([]int64, c)
	valid := 0
	for b0 := 0; b0 < lk; b0 += c {
		b1 := min(b0+c, lk)
		// U_b: S_b and the block's valid keys, sorted descending.
		u := append([]Key(nil), s...)
		for j := b0; j < b1; j++ {
			if ord[j] != 0 {
				u = append(u, Key{ord[j], uint32(j)})
			}
		}
		slices.SortFunc(u, descending)
		// The rows' thresholds (the w-th best valid key of [0, p]) and kept counts.
		for p := b0; p < b1; p++ {
			if ord[p] != 0 {
				valid++
				heap.Push(&top, Key{ord[p], uint32(p)})
				if top.Len() > w {
					heap.Pop(&top)
				}
			}
			tau[p-b0] = Key{}
			if valid > w {
				tau[p-b0] = top[0]
			}
			kept[p-b0] = int64(min(valid, w))
		}
		// Tiles: aligned to br from position 0, so a tile lies in one block when br
		// divides C (the kernel's tiles do: C is a multiple of 64).
		for t0 := b0; t0 < b1; t0 += br {
			t1 := min(t0+br, b1)
			walk := 0
			for p := t0; p < t1; p++ {
				n.Kept += kept[p-b0]
				e := len(u)
				if th := tau[p-b0]; th != (Key{}) {
					// Entries ranked at or above the threshold: U_b holds it.
					e, _ = slices.BinarySearchFunc(u, th, descending)
					e++
				}
				walk = max(walk, e)
			}
			n.Walked += int64(br) * int64((walk+bc-1)/bc*bc)
		}
		s = u[:min(w, len(u))]
	}
	return n
}

// descending orders keys best first (U's order), for slices.SortFunc and
// slices.BinarySearchFunc.
func descending(a, b Key) int {
	switch {
	case b.Less(a):
		return -1
	case a.Less(b):
		return 1
	}
	return 0
}

// keyHeap is a min-heap of keys (the worst on top).
type keyHeap []Key

func (h keyHeap) Len() int           { return len(h) }
func (h keyHeap) Less(i, j int) bool { return h[i].Less(h[j]) }
func (h keyHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *keyHeap) Push(x any)        { *h = append(*h, x.(Key)) }
func (h *keyHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
