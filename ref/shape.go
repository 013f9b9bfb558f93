package ref

import "fmt"

// Shape holds the sizes of one attention problem: Q is [B, Lq, H, D] and
// K, V are [B, Lk, Hkv, D]. Selection needs nothing else.
type Shape struct {
	B   int // batch size
	Lq  int // query rows
	Lk  int // keys
	H   int // query heads
	Hkv int // key/value heads; H must be a multiple of Hkv
}

// ShapeOf returns the Shape of the problem with queries q and keys k.
func ShapeOf(q, k *Tensor4) Shape {
	return Shape{B: q.B, Lq: q.L, Lk: k.L, H: q.H, Hkv: k.H}
}

// Group returns g = H/Hkv, the number of query heads that share a kv head.
func (s Shape) Group() int { return s.H / s.Hkv }

// KVHead returns the kv head that query head h reads.
func (s Shape) KVHead(h int) int { return h / s.Group() }

// BiasHead returns the bias head that query head h uses when there are hb
// bias heads (hb is H or Hkv).
func (s Shape) BiasHead(h, hb int) int {
	if hb == s.H {
		return h
	}
	return h / s.Group()
}

// Pos returns p_i = i + (Lk - Lq), the key position of query row i under
// bottom-right alignment. It is negative for the first Lq-Lk rows when
// Lq > Lk; such rows have no causal candidates.
func (s Shape) Pos(i int) int { return i + s.Lk - s.Lq }

func (s Shape) valid() error {
	if s.B < 1 || s.Lq < 1 || s.Lk < 1 || s.H < 1 || s.Hkv < 1 {
		return fmt.Errorf("ref: empty shape %+v", s)
	}
	if s.H%s.Hkv != 0 {
		return fmt.Errorf("ref: H=%d is not a multiple of Hkv=%d", s.H, s.Hkv)
	}
	return nil
}

// checkDelta validates the weights slice for hb bias heads. nilOK says
// whether the mode allows no weights at all.
func (s Shape) checkDelta(delta []float64, hb int, nilOK bool) error {
	if delta == nil {
		if nilOK {
			return nil
		}
		return fmt.Errorf("ref: delta is nil; only ModeNone and ModeExplicit allow that")
	}
	if hb != s.H && hb != s.Hkv {
		return fmt.Errorf("ref: hb=%d must be H=%d or Hkv=%d", hb, s.H, s.Hkv)
	}
	if len(delta) != s.B*hb*s.Lk {
		return fmt.Errorf("ref: delta has %d values, want B*Hb*Lk = %d", len(delta), s.B*hb*s.Lk)
	}
	return nil
}
