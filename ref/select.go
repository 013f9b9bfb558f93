package ref

import (
	"math"
	"slices"
)

// Better reports whether key a with weight da ranks above key b with weight
// db: the larger weight first and, on equal weight, the later key first.
// Distinct keys never tie, so the ranking is a strict total order.
//
// Non-finite weights rank as torch.topk ranks them (spec section 7): NaN
// above +Inf, every NaN equal to every other (the later key first among
// them), -Inf below every finite weight. The comparison is numeric
// otherwise, so -0 and +0 are equal weights and the later key wins; an
// implementation that ranks by the float's bits must map -0 to +0 and every
// NaN to one NaN first.
func Better(da float64, a int, db float64, b int) bool {
	nanA, nanB := math.IsNaN(da), math.IsNaN(db)
	switch {
	case nanA && nanB:
		return a > b
	case nanA || nanB:
		return nanA
	case da != db:
		return da > db
	}
	return a > b
}

// TopW returns the (at most) w best-ranked keys of cand, best first, where
// key j has weight weights[j]. cand is not modified.
func TopW(weights []float64, cand []int, w int) []int {
	sorted := slices.Clone(cand)
	// Sorting every candidate is slower than a selection but obviously right.
	slices.SortFunc(sorted, func(a, b int) int {
		switch {
		case Better(weights[a], a, weights[b], b):
			return -1
		case Better(weights[b], b, weights[a], a):
			return 1
		}
		return 0
	})
	if len(sorted) > w {
		sorted = sorted[:w]
	}
	return sorted
}

// Candidates returns C_i for row i of batch b: the keys j <= p_i when
// opts.Causal (none when p_i < 0), else all keys, minus those that
// opts.KeyPadding marks invalid. Keys come in increasing order.
func Candidates(s Shape, b, i int, opts Options) []int {
	last := s.Lk - 1
	if opts.Causal {
		last = min(last, s.Pos(i))
	}
	var c []int
	for j := 0; j <= last; j++ {
		if opts.validKey(b, j) {
			c = append(c, j)
		}
	}
	return c
}

// Keep returns the boolean keep mask of the problem s as a flat
// [B][H][Lq][Lk] slice, index ((b*H+h)*Lq+i)*Lk+j; true means row i of query
// head h attends to key j.
//
// delta holds the weights as a flat [B][hb][Lk] slice (hb is H or Hkv), the
// float32-rounded values that DynamicWeights returns: selection is made on
// them exactly as given. ModeRow and ModeShared need delta; ModeNone and
// ModeExplicit ignore it and accept nil.
//
// The mask is quadratic in size, which is fine for a reference.
func Keep(delta []float64, hb int, s Shape, opts Options) ([]bool, error) {
	if err := s.valid(); err != nil {
		return nil, err
	}
	if err := opts.check(s); err != nil {
		return nil, err
	}
	needDelta := opts.Mode == ModeRow || opts.Mode == ModeShared
	if err := s.checkDelta(delta, hb, !needDelta); err != nil {
		return nil, err
	}

	keep := make([]bool, s.B*s.H*s.Lq*s.Lk)
	for b := 0; b < s.B; b++ {
		for h := 0; h < s.H; h++ {
			var weights []float64 // this head's Lk weights
			if needDelta {
				c := s.BiasHead(h, hb)
				weights = delta[(b*hb+c)*s.Lk : (b*hb+c+1)*s.Lk]
			}

			// Mode shared: one top-w per (batch, head) over all valid
			// keys, ignoring causality; rows then intersect it with C_i.
			var shared []bool
			if opts.Mode == ModeShared {
				var valid []int
				for j := 0; j < s.Lk; j++ {
					if opts.validKey(b, j) {
						valid = append(valid, j)
					}
				}
				shared = make([]bool, s.Lk)
				for _, j := range TopW(weights, valid, opts.Window) {
					shared[j] = true
				}
			}

			for i := 0; i < s.Lq; i++ {
				row := keep[((b*s.H+h)*s.Lq+i)*s.Lk:][:s.Lk]
				cand := Candidates(s, b, i, opts)
				switch opts.Mode {
				case ModeRow:
					// TopW keeps all of C_i when |C_i| <= w.
					for _, j := range TopW(weights, cand, opts.Window) {
						row[j] = true
					}
				case ModeShared:
					for _, j := range cand {
						row[j] = shared[j]
					}
				case ModeNone:
					for _, j := range cand {
						row[j] = true
					}
				case ModeExplicit:
					for _, j := range cand {
						row[j] = opts.Mask == nil || opts.Mask.At(b, headOf(opts.Mask.H, s, h), i, j)
					}
				}
			}
		}
	}
	return keep, nil
}
