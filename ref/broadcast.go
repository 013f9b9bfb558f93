package ref

import "fmt"

// Broadcast4 is a float tensor of shape [B, H, Lq, Lk] (row-major) that
// broadcasts over [batch, head, query row, key]: a dimension of size 1 is
// read at index 0 whatever the index asked for. H may be the number of query
// heads, the number of kv heads (query head h then reads head h/g) or 1.
// It carries the explicit additive bias of ModeExplicit.
type Broadcast4 struct {
	B, H, Lq, Lk int
	Data         []float64
}

// Broadcast4Bool is the boolean counterpart of Broadcast4, with the same
// shape and broadcasting rules. It carries the explicit mask of
// ModeExplicit; true means keep.
type Broadcast4Bool struct {
	B, H, Lq, Lk int
	Data         []bool
}

// NewBroadcast4 returns a zeroed Broadcast4 of shape [b, h, lq, lk].
func NewBroadcast4(b, h, lq, lk int) *Broadcast4 {
	return &Broadcast4{B: b, H: h, Lq: lq, Lk: lk, Data: make([]float64, b*h*lq*lk)}
}

// NewBroadcast4Bool returns a Broadcast4Bool of shape [b, h, lq, lk] with
// every element false.
func NewBroadcast4Bool(b, h, lq, lk int) *Broadcast4Bool {
	return &Broadcast4Bool{B: b, H: h, Lq: lq, Lk: lk, Data: make([]bool, b*h*lq*lk)}
}

// At returns the element at (b, h, i, j), where h indexes x's own head
// dimension; dimensions of size 1 ignore their index.
func (x *Broadcast4) At(b, h, i, j int) float64 {
	return x.Data[bIndex(x.B, x.H, x.Lq, x.Lk, b, h, i, j)]
}

// Set sets the element that At(b, h, i, j) reads.
func (x *Broadcast4) Set(b, h, i, j int, v float64) {
	x.Data[bIndex(x.B, x.H, x.Lq, x.Lk, b, h, i, j)] = v
}

// At returns the element at (b, h, i, j), where h indexes x's own head
// dimension; dimensions of size 1 ignore their index.
func (x *Broadcast4Bool) At(b, h, i, j int) bool {
	return x.Data[bIndex(x.B, x.H, x.Lq, x.Lk, b, h, i, j)]
}

// Set sets the element that At(b, h, i, j) reads.
func (x *Broadcast4Bool) Set(b, h, i, j int, v bool) {
	x.Data[bIndex(x.B, x.H, x.Lq, x.Lk, b, h, i, j)] = v
}

// bIndex is the row-major offset of (b, h, i, j) in a [nb, nh, nq, nk]
// tensor, with size-1 dimensions broadcast.
func bIndex(nb, nh, nq, nk, b, h, i, j int) int {
	if nb == 1 {
		b = 0
	}
	if nh == 1 {
		h = 0
	}
	if nq == 1 {
		i = 0
	}
	if nk == 1 {
		j = 0
	}
	if b < 0 || b >= nb || h < 0 || h >= nh || i < 0 || i >= nq || j < 0 || j >= nk {
		panic(fmt.Sprintf("ref: index (%d %d %d %d) out of broadcast shape [%d %d %d %d]", b, h, i, j, nb, nh, nq, nk))
	}
	return ((b*nh+h)*nq+i)*nk + j
}

// checkBroadcast tells whether a [nb, nh, nq, nk] tensor with n values
// broadcasts over the attention problem s.
func checkBroadcast(name string, nb, nh, nq, nk, n int, s Shape) error {
	fits := func(n, full int) bool { return n == 1 || n == full }
	if !fits(nb, s.B) || !(fits(nh, s.H) || nh == s.Hkv) || !fits(nq, s.Lq) || !fits(nk, s.Lk) {
		return fmt.Errorf("ref: %s shape [%d %d %d %d] does not broadcast over [B=%d, H=%d or Hkv=%d, Lq=%d, Lk=%d]",
			name, nb, nh, nq, nk, s.B, s.H, s.Hkv, s.Lq, s.Lk)
	}
	if n != nb*nh*nq*nk {
		return fmt.Errorf("ref: %s has %d values for shape [%d %d %d %d]", name, n, nb, nh, nq, nk)
	}
	return nil
}

// headOf maps query head h to the head index of a broadcast tensor whose
// head dimension is nh (1, Hkv or H).
func headOf(nh int, s Shape, h int) int {
	switch nh {
	case 1:
		return 0
	case s.H:
		return h
	default: // Hkv
		return h / s.Group()
	}
}
