package kern

import (
	"math/rand/v2"
	"testing"
)

// TestCountWalk: CountWalk against a count from the definitions: U_b from BuildPlanCPU,
// each row's walk by a linear scan of U_b for the entries at or above its threshold,
// and each row's kept keys by testing every key of its prefix against the threshold;
// with padded keys, ties (few distinct weights) and windows below, at and above C.
func TestCountWalk(t *testing.T) {
	rng := rand.New(rand.NewPCG(selectSeed(t), 7))
	for it := range 60 {
		lk := 1 + rng.IntN(700)
		w := 1 + rng.IntN(150)
		br := []int{8, 16, 32, 64}[rng.IntN(4)]
		bc := []int{8, 16, 64}[rng.IntN(3)]
		levels := []int{3, 50, 1 << 20}[rng.IntN(3)]
		ord := make([]uint32, lk)
		for j := range ord {
			if rng.IntN(10) > 0 { // a tenth of the keys padded
				ord[j] = Ord(float32(rng.IntN(levels)))
			}
		}
		want := walkByDefinition(ord, w, br, bc)
		if got := CountWalk(ord, w, br, bc); got != want {
			t.Fatalf("case %d (Lk %d, w %d, tile %dx%d, %d weights): CountWalk %+v, want %+v", it, lk, w, br, bc, levels, got, want)
		}
	}
	// Every row keeps all of its prefix (w >= L): nothing walked is dropped but the
	// tiles' rows before the last and the chunks' padding.
	ord := make([]uint32, 256)
	for j := range ord {
		ord[j] = Ord(float32(j % 7))
	}
	if got := CountWalk(ord, 256, 64, 64); got.Kept != 256*257/2 {
		t.Fatalf("w >= L: kept %d, want %d", got.Kept, 256*257/2)
	}
}

func walkByDefinition(ord []uint32, w, br, bc int) WalkCount {
	lk := len(ord)
	plan := BuildPlanCPU(ord, w, lk, true)
	var n WalkCount
	for t0 := 0; t0 < lk; t0 += br {
		u := plan.U[min(t0/plan.C, len(plan.U)-2)]
		walk := 0
		for p := t0; p < min(t0+br, lk); p++ {
			th := plan.Tau[p]
			e := 0
			for _, x := range u {
				if th == (Key{}) || !x.Less(th) {
					e++
				}
			}
			walk = max(walk, e)
			for j := 0; j <= p; j++ {
				k := Key{ord[j], uint32(j)}
				if ord[j] != 0 && (th == (Key{}) || !k.Less(th)) {
					n.Kept++
				}
			}
		}
		n.Walked += int64(br) * int64((walk+bc-1)/bc*bc)
	}
	return n
}
