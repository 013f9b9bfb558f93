package ref

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/floats"
)

// Grads holds the gradients of the attention inputs.
type Grads struct {
	DQ *Tensor4 // [B, Lq, H, D]
	DK *Tensor4 // [B, Lk, Hkv, D], summed over each GQA group
	DV *Tensor4 // [B, Lk, Hkv, D], summed over each GQA group; attention term only
	// DDelta is the gradient of the weights as a flat [B][Hb][Lk] slice:
	// entry (b, c, j) sums dS_ij over all rows i and all query heads that use
	// bias head c. It is nil when delta was nil. Pass it to WeightsBackward
	// for the gradients of A, Wdt, bdt and the extra term of dV.
	DDelta []float64
}

// Backward computes the gradients of DMA attention (spec section 4) given
// dO, the gradient of the loss with respect to O. The arguments before opts
// are those given to Forward; o and lse are what Forward returned, used as
// the GPU backward uses them (P_ij = exp(s_ij - lse_i), and dot(dO_i, o_i)).
//
// The mask is a constant: selection has no gradient. With
//
//	dS_ij = P_ij * (dot(dO_i, v_j) - dot(dO_i, o_i)) * (1 - tanh²(raw_ij/softcap))
//
// (the last factor only when softcap is on, raw being the score before
// capping), dQ_i = scale * sum_j dS_ij k_j, dK_j = scale * sum_i dS_ij q_i,
// dV_j = sum_i P_ij dO_i and dDelta_j = sum_i dS_ij. The explicit Bias gets
// no gradient. Rows that keep no key contribute nothing, nor do kept keys
// whose score is -inf (P_ij = 0 exactly: not even a NaN in v_j or dO_i
// reaches a gradient through them).
//
// Non-finite values (spec section 7) go where the chain rule takes them and
// nowhere else. A row whose forward is NaN (lse_i NaN) has P_ij = NaN, so
// dQ_i and the dK_j, dV_j, dDelta_j of every key it keeps are NaN; a row
// whose o_i is NaN through a NaN in a kept v_j has dot(dO_i, o_i) = NaN, so
// dQ_i and the dK_j, dDelta_j of every key it keeps are NaN, while dV stays
// finite (P and dO are). A gradient of a key that no such row keeps, and of
// a row that keeps no such key, stays finite: a value is never multiplied by
// the zero of a (row, key) pair that is not kept. A kept pair whose dS_ij is
// exactly 0 (the softcap's derivative at an infinite raw score) adds nothing
// to dQ_i, dK_j or dDelta_j either, so an infinity in k_j or q_i stays out.
func Backward(q, k, v *Tensor4, delta []float64, hb int, opts Options, o *Tensor4, lse []float64, dO *Tensor4) (*Grads, error) {
	p, err := newProblem(q, k, v, delta, hb, opts)
	if err != nil {
		return nil, err
	}
	s := p.s
	for _, t := range []struct {
		name string
		t    *Tensor4
	}{{"o", o}, {"dO", dO}} {
		if err := t.t.valid(t.name); err != nil {
			return nil, err
		}
		if !t.t.SameShape(q) {
			return nil, fmt.Errorf("ref: %s is %s, want the shape of q %s", t.name, t.t.shapeString(), q.shapeString())
		}
	}
	if len(lse) != s.B*s.H*s.Lq {
		return nil, fmt.Errorf("ref: lse has %d values, want B*H*Lq = %d", len(lse), s.B*s.H*s.Lq)
	}

	g := &Grads{
		DQ: NewTensor4(q.B, q.L, q.H, q.D),
		DK: NewTensor4(k.B, k.L, k.H, k.D),
		DV: NewTensor4(v.B, v.L, v.H, v.D),
	}
	if delta != nil {
		g.DDelta = make([]float64, len(delta))
	}
	for b := 0; b < s.B; b++ {
		for h := 0; h < s.H; h++ {
			kvh := s.KVHead(h)
			for i := 0; i < s.Lq; i++ {
				l := lse[p.lseIndex(b, h, i)]
				if math.IsInf(l, -1) {
					continue // empty row: P = 0 everywhere
				}
				raw, sc := p.scores(b, h, i)
				qi, doi := q.Row(b, i, h), dO.Row(b, i, h)
				dqi := g.DQ.Row(b, i, h)
				rowD := floats.Dot(doi, o.Row(b, i, h)) // dot(dO_i, o_i)
				for j, sij := range sc {
					if math.IsInf(sij, -1) {
						continue // not kept
					}
					pij := math.Exp(sij - l)
					vj := v.Row(b, j, kvh)
					ds := pij * (floats.Dot(doi, vj) - rowD)
					if c := opts.Softcap; c > 0 {
						t := math.Tanh(raw[j] / c)
						ds *= 1 - t*t
					}
					floats.AddScaled(g.DV.Row(b, j, kvh), pij, doi)
					if ds == 0 {
						// Adds nothing, not even 0 * inf: with the softcap on, an
						// infinite raw score has dS = 0 whatever k_j or q_i hold.
						continue
					}
					floats.AddScaled(dqi, p.scale*ds, k.Row(b, j, kvh))
					floats.AddScaled(g.DK.Row(b, j, kvh), p.scale*ds, qi)
					if g.DDelta != nil {
						g.DDelta[(b*hb+s.BiasHead(h, hb))*s.Lk+j] += ds
					}
				}
			}
		}
	}
	return g, nil
}
