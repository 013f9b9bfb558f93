package ref

import (
	"fmt"
	"math"

	"gonum.org/v1/gonum/floats"
)

// problem is one validated attention call; Forward and Backward share it so
// that both see exactly the same scores and mask.
type problem struct {
	q, k, v *Tensor4
	delta   []float64
	hb      int
	opts    Options
	s       Shape
	scale   float64
	keep    []bool // [B][H][Lq][Lk]
}

func newProblem(q, k, v *Tensor4, delta []float64, hb int, opts Options) (*problem, error) {
	for _, t := range []struct {
		name string
		t    *Tensor4
	}{{"q", q}, {"k", k}, {"v", v}} {
		if err := t.t.valid(t.name); err != nil {
			return nil, err
		}
	}
	if !k.SameShape(v) {
		return nil, fmt.Errorf("ref: k %s and v %s differ in shape", k.shapeString(), v.shapeString())
	}
	if q.B != k.B || q.D != k.D {
		return nil, fmt.Errorf("ref: q %s and k %s differ in batch or head dim", q.shapeString(), k.shapeString())
	}
	s := ShapeOf(q, k)
	// Keep validates the shape, the options and delta when given.
	keep, err := Keep(delta, hb, s, opts)
	if err != nil {
		return nil, err
	}
	return &problem{q: q, k: k, v: v, delta: delta, hb: hb, opts: opts, s: s, scale: opts.scale(q.D), keep: keep}, nil
}

// keepRow returns the Lk keep flags of row i of head h in batch b.
func (p *problem) keepRow(b, h, i int) []bool {
	return p.keep[((b*p.s.H+h)*p.s.Lq+i)*p.s.Lk:][:p.s.Lk]
}

// scores returns, for row i of head h in batch b, the raw scores
// scale*q·k + delta + bias (before softcap) and the final scores (after
// softcap, -inf where the row does not keep the key).
func (p *problem) scores(b, h, i int) (raw, s []float64) {
	lk := p.s.Lk
	raw = make([]float64, lk)
	s = make([]float64, lk)
	keep := p.keepRow(b, h, i)
	qi := p.q.Row(b, i, h)
	kvh := p.s.KVHead(h)
	for j := 0; j < lk; j++ {
		if !keep[j] {
			s[j] = math.Inf(-1)
			continue
		}
		r := p.scale * floats.Dot(qi, p.k.Row(b, j, kvh))
		if p.delta != nil {
			r += p.delta[(b*p.hb+p.s.BiasHead(h, p.hb))*lk+j]
		}
		if x := p.opts.Bias; x != nil {
			r += x.At(b, headOf(x.H, p.s, h), i, j)
		}
		raw[j] = r
		s[j] = r
		if c := p.opts.Softcap; c > 0 {
			s[j] = c * math.Tanh(r/c)
		}
	}
	return raw, s
}

// lseIndex is the offset of (b, h, i) in the flat [B][H][Lq] LSE slice.
func (p *problem) lseIndex(b, h, i int) int { return (b*p.s.H+h)*p.s.Lq + i }
