package ref_test

import (
	"fmt"

	"github.com/dmavk/dmavk/ref"
)

// Example runs the whole pipeline on a small causal GQA problem: weights
// from V, mode-row attention, and the gradients of everything.
func Example() {
	rng := newRNG(42)
	const b, l, h, hkv, d, hb = 1, 8, 4, 2, 4, 2 // Hb = Hkv
	q := ref.RandTensor4(rng, b, l, h, d, 1)
	k := ref.RandTensor4(rng, b, l, hkv, d, 1)
	v := ref.RandTensor4(rng, b, l, hkv, d, 1)
	p := ref.WeightParams{
		Wdt:  ref.RandSlice(rng, hkv*d*hb, 0.5),
		A:    ref.RandSlice(rng, hb, 1),
		Hb:   hb,
		Form: ref.FormExp,
	}
	delta := ref.DynamicWeights(v, p) // float32-valued, as the GPU stores it
	opts := ref.Options{Mode: ref.ModeRow, Window: 3, Causal: true}

	o, lse, err := ref.Forward(q, k, v, delta, hb, opts)
	if err != nil {
		panic(err)
	}
	dO := ref.RandTensor4(rng, b, l, h, d, 1)
	g, err := ref.Backward(q, k, v, delta, hb, opts, o, lse, dO)
	if err != nil {
		panic(err)
	}
	dA, dWdt, _, dVw := ref.WeightsBackward(v, p, g.DDelta)

	keep, _ := ref.Keep(delta, hb, ref.ShapeOf(q, k), opts)
	kept := 0
	for _, x := range keep {
		if x {
			kept++
		}
	}
	fmt.Println("kept pairs:", kept, "of", len(keep))
	fmt.Println("shapes:", len(o.Data), len(lse), len(g.DDelta), len(dA), len(dWdt), len(dVw.Data))
	// Output:
	// kept pairs: 84 of 256
	// shapes: 128 32 16 2 16 64
}
