package kern

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/dmavk/dmavk/ref"
)

// TestOrdRanksAsRef: sorting keys by (Ord, index) is ref.Better's ranking (spec
// sections 2 and 7) for weights with signed zeros, infinities and NaNs of every sign
// and payload, and Ord never gives 0 (a padded key).
func TestOrdRanksAsRef(t *testing.T) {
	rng := rand.New(rand.NewPCG(selectSeed(t), 1))
	special := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)),
		math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32,
		math.Float32frombits(0x7fc00000), math.Float32frombits(0xffffffff), math.Float32frombits(0x7f800001), 1, -1}
	for it := range 200 {
		n := 1 + rng.IntN(40)
		x := make([]float32, n)
		for i := range x {
			if rng.IntN(2) == 0 {
				x[i] = special[rng.IntN(len(special))]
			} else {
				x[i] = math.Float32frombits(rng.Uint32()) // any bits, NaNs included
			}
		}
		byOrd, byRef := make([]int, n), make([]int, n)
		for i := range n {
			byOrd[i], byRef[i] = i, i
			if Ord(x[i]) == 0 {
				t.Fatalf("Ord(%#x) = 0", math.Float32bits(x[i]))
			}
		}
		slices.SortFunc(byOrd, func(a, b int) int {
			ka, kb := Key{Ord(x[a]), uint32(a)}, Key{Ord(x[b]), uint32(b)}
			switch {
			case kb.Less(ka):
				return -1
			case ka.Less(kb):
				return 1
			}
			return 0
		})
		w := make([]float64, n)
		for i, v := range x {
			w[i] = float64(v)
		}
		byRef = ref.TopW(w, byRef, n)
		if !slices.Equal(byOrd, byRef) {
			t.Fatalf("iteration %d, weights %v: Ord ranks %v, ref %v", it, x, byOrd, byRef)
		}
	}
	if u := Unord(Ord(float32(math.NaN()))); !math.IsNaN(float64(u)) {
		t.Fatalf("Unord(Ord(NaN)) = %v", u)
	}
}
