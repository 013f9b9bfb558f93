package check

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/ref"
)

// nonFiniteValues are what a NonFinite case puts into its inputs.
var nonFiniteValues = []float64{math.NaN(), math.Inf(1), math.Inf(-1)}

// injectNonFinite puts one to three non-finite values (NaN, +inf, -inf; NaN only in
// V) into each of q, k, v and the given weights (delta, and wt on the device; none with WeightsParams, whose weights
// turn a non-finite V into a NaN weight themselves): the first of each a NaN (a NaN or
// +inf for the weights, which rank first), at query rows that keep a key and at keys
// that some row keeps, in batches 0 .. B-2 only. The reference tensors (qr, kr, vr,
// delta) are changed in place and q, k, v, wt uploaded again. The values are exact in
// every dtype.
func injectNonFinite(ctx context.Context, c Case, rng *rand.Rand, hb int, ropt ref.Options,
	qr, kr, vr *ref.Tensor4, delta []float64, q, k, v *dma.Tensor, wt *dma.Weights) error {
	s := ref.ShapeOf(qr, kr)
	kopt := ropt
	if delta == nil && (kopt.Mode == ref.ModeRow || kopt.Mode == ref.ModeShared) {
		kopt.Mode = ref.ModeNone // weights from V: every candidate may be kept
	}
	keep, err := ref.Keep(delta, hb, s, kopt)
	if err != nil {
		return fmt.Errorf("reference: %w", err)
	}
	var rows, keys [][3]int // (b, i, h) rows that keep a key; (b, j, kvh) keys some row keeps
	seen := map[[3]int]bool{}
	for b := range s.B - 1 {
		for h := range s.H {
			for i := range s.Lq {
				any := false
				for j := range s.Lk {
					if keep[((b*s.H+h)*s.Lq+i)*s.Lk+j] {
						any = true
						if key := [3]int{b, j, s.KVHead(h)}; !seen[key] {
							seen[key] = true
							keys = append(keys, key)
						}
					}
				}
				if any {
					rows = append(rows, [3]int{b, i, h})
				}
			}
		}
	}
	if len(rows) == 0 {
		return fmt.Errorf("check: no row of batches 0..%d keeps a key: nowhere to put a non-finite value", s.B-2)
	}
	for _, x := range []struct {
		t    *ref.Tensor4
		at   [][3]int
		kind int // values drawn from nonFiniteValues[:kind]
	}{{qr, rows, 3}, {kr, keys, 3}, {vr, keys, 1}} {
		// V gets NaN only: an infinity in V makes O infinite or NaN depending on whether
		// a tiny P underflows (fp16 P on the tensor-core paths), which section 7 leaves open.
		for n := range 1 + rng.IntN(3) {
			at := x.at[rng.IntN(len(x.at))]
			val := nonFiniteValues[rng.IntN(x.kind)]
			if n == 0 {
				val = math.NaN()
			}
			if d := rng.IntN(x.t.D); isFinite(x.t.At(at[0], at[1], at[2], d)) { // never undo an earlier one
				x.t.Set(at[0], at[1], at[2], d, val)
			}
		}
	}
	for _, x := range []struct {
		t   *dma.Tensor
		ref *ref.Tensor4
	}{{q, qr}, {k, kr}, {v, vr}} {
		if err := x.t.Upload(ctx, f32s(x.ref.Data)); err != nil {
			return err
		}
	}
	if delta == nil || wt == nil {
		return nil
	}
	for n := range 1 + rng.IntN(3) {
		val := nonFiniteValues[rng.IntN(3)]
		if n == 0 {
			val = nonFiniteValues[rng.IntN(2)]
		}
		key := keys[rng.IntN(len(keys))]
		bh := key[2]
		if hb == s.H {
			bh = key[2]*s.Group() + rng.IntN(s.Group())
		}
		if at := (key[0]*hb+bh)*s.Lk + key[1]; isFinite(delta[at]) {
			delta[at] = val
		}
	}
	return wt.Upload(ctx, f32s(delta))
}

// sameClass reports whether got and want are both NaN, the same infinity, or both
// finite.
func sameClass(got, want float64) bool {
	switch {
	case math.IsNaN(want):
		return math.IsNaN(got)
	case math.IsInf(want, 0):
		return got == want
	}
	return !math.IsNaN(got) && !math.IsInf(got, 0)
}

// maxFinite is the largest finite |x_i| (0 for none).
func maxFinite(x []float64) float64 {
	m := 0.0
	for _, v := range x {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			m = max(m, math.Abs(v))
		}
	}
	return m
}

func f32s(x []float64) []float32 { return ref.ToFloat32Slice(x) }

func isFinite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }
