package ref

import (
	"math"

	"gonum.org/v1/gonum/floats"
)

// Forward computes DMA attention (spec section 3) and returns O with the
// shape of q ([B, Lq, H, D]) and the log-sum-exp of each row's kept scores as
// a flat [B][H][Lq] slice, index (b*H+h)*Lq+i.
//
// q is [B, Lq, H, D]; k and v are [B, Lk, Hkv, D]. delta holds the weights as
// a flat [B][hb][Lk] slice with hb = H or Hkv (see Keep); it is added to every
// score and drives the selection of ModeRow and ModeShared. In ModeNone and
// ModeExplicit delta may be nil, meaning no weight bias (hb is then ignored).
//
// Non-finite values follow spec section 7. A kept key whose score is -inf
// (a -inf weight or bias) gets no probability and contributes nothing, not
// even a NaN in its value row; a row that keeps no key, or whose kept scores
// are all -inf, gets o_i = 0 and lse_i = -inf. A row with a NaN or +inf among
// its kept scores (a NaN in q_i or in a kept k_j, a NaN or +inf weight or
// bias) gets o_i = NaN and lse_i = NaN, never -inf. A NaN or infinity in a
// kept v_j (score above -inf) makes o_i NaN and leaves lse_i alone. Nothing
// reaches a row that does not keep the key.
func Forward(q, k, v *Tensor4, delta []float64, hb int, opts Options) (o *Tensor4, lse []float64, err error) {
	p, err := newProblem(q, k, v, delta, hb, opts)
	if err != nil {
		return nil, nil, err
	}
	s := p.s
	o = NewTensor4(s.B, s.Lq, s.H, q.D)
	lse = make([]float64, s.B*s.H*s.Lq)
	for b := 0; b < s.B; b++ {
		for h := 0; h < s.H; h++ {
			for i := 0; i < s.Lq; i++ {
				_, sc := p.scores(b, h, i)
				// A NaN or +inf score makes l NaN (max and exp propagate it),
				// and then every o_i element through exp(s_ij - l).
				l := logSumExp(sc)
				lse[p.lseIndex(b, h, i)] = l
				if math.IsInf(l, -1) {
					continue // empty row: o_i stays 0
				}
				oi := o.Row(b, i, h)
				for j, sij := range sc {
					if !math.IsInf(sij, -1) {
						floats.AddScaled(oi, math.Exp(sij-l), v.Row(b, j, s.KVHead(h)))
					}
				}
			}
		}
	}
	return o, lse, nil
}

// logSumExp returns log(sum_j exp(s_j)), shifting by the maximum so nothing
// overflows; it is -inf when every s_j is -inf (or s is empty), and NaN when
// some s_j is NaN or +inf (+inf - +inf is NaN).
func logSumExp(s []float64) float64 {
	m := math.Inf(-1)
	for _, x := range s {
		m = max(m, x)
	}
	if math.IsInf(m, -1) {
		return m // without this, s_j - m would be NaN
	}
	var sum float64
	for _, x := range s {
		sum += math.Exp(x - m)
	}
	return m + math.Log(sum)
}
