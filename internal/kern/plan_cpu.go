package kern

import (
	"math"
	"sort"
)

// Ord maps a float32 weight to bits whose unsigned order is the ranking of spec
// sections 2 and 7 (torch.topk's): the float order, with -0 and +0 equal, every NaN
// equal to every other and above +Inf. It never returns 0, which marks a padded key.
func Ord(x float32) uint32 {
	u := math.Float32bits(x)
	switch a := u &^ 0x80000000; {
	case a == 0:
		u = 0 // -0 -> +0
	case a > 0x7f800000:
		u = 0x7fc00000 // every NaN -> one quiet NaN, above +Inf
	}
	if u&0x80000000 != 0 {
		return ^u // nonzero: u is never 0xffffffff, a NaN
	}
	return u | 0x80000000
}

// Unord inverts Ord (up to -0, which comes back as +0, and NaN, which comes back as
// the quiet NaN 0x7fc00000).
func Unord(u uint32) float32 {
	if u&0x80000000 != 0 {
		return math.Float32frombits(u &^ 0x80000000)
	}
	return math.Float32frombits(^u)
}

// BlockSize is C for window w: a multiple of 64, at least w.
func BlockSize(w int) int {
	return (max(w, 64) + 63) / 64 * 64
}

// Key is one entry of U or a threshold: (ord, idx), compared lexicographically.
type Key struct{ Ord, Idx uint32 }

// Less reports whether a ranks below b.
func (a Key) Less(b Key) bool { return a.Ord < b.Ord || (a.Ord == b.Ord && a.Idx < b.Idx) }

// PlanCPU is the selection plan of one (batch, bias head), built on the CPU exactly as
// the GPU kernels must build it. It is the oracle for their tests.
type PlanCPU struct {
	C      int
	U      [][]Key // nb+1 lists, each sorted descending
	Tau    []Key   // per query row (mode row, causal); nil otherwise
	Window int
}

// BuildPlanCPU computes U and, when rowCausal, tau for lq query rows, from ord (len Lk).
func BuildPlanCPU(ord []uint32, w, lq int, rowCausal bool) PlanCPU {
	lk := len(ord)
	c := BlockSize(w)
	nb := (lk + c - 1) / c
	p := PlanCPU{C: c, Window: w}
	desc := func(s []Key) { sort.Slice(s, func(a, b int) bool { return s[b].Less(s[a]) }) }
	var s []Key // S_b
	for b := 0; b < nb; b++ {
		u := append([]Key(nil), s...)
		for j := b * c; j < min((b+1)*c, lk); j++ {
			if ord[j] != 0 {
				u = append(u, Key{ord[j], uint32(j)})
			}
		}
		desc(u)
		p.U = append(p.U, u)
		s = append([]Key(nil), u[:min(w, len(u))]...)
	}
	p.U = append(p.U, s) // S_final
	if rowCausal {
		p.Tau = make([]Key, lq)
		for i := range lq {
			pos := i + lk - lq
			if pos < 0 {
				continue
			}
			var valid []Key
			for j := 0; j <= pos; j++ {
				if ord[j] != 0 {
					valid = append(valid, Key{ord[j], uint32(j)})
				}
			}
			if len(valid) > w {
				desc(valid)
				p.Tau[i] = valid[w-1]
			}
		}
	}
	return p
}
