package dma_test

import (
	"context"
	"fmt"
	"log"

	"github.com/dmavk/dmavk/dma"
)

// One training step's gradients. With q = k = 0 and equal weights, row 1 averages its
// two keys' values (0 and 2): the loss sum(O[1]) has dV = 1/2 for both keys, and
// raising key 1's weight (value 2) would raise it: dDelta = P (dO.v - dO.o) = -4, +4.
func ExampleDevice_Backward() {
	ctx := context.Background()
	dev, err := dma.Open(dma.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()

	const L, D = 2, 8
	s := dma.Shape{B: 1, L: L, H: 1, D: D}
	newTensor := func(row0, row1 float32) *dma.Tensor {
		t, err := dev.NewTensor(dma.Float32, s, dma.BLHD)
		if err != nil {
			log.Fatal(err)
		}
		vals := make([]float32, L*D)
		for d := 0; d < D; d++ {
			vals[d], vals[D+d] = row0, row1
		}
		if err := t.Upload(ctx, vals); err != nil {
			log.Fatal(err)
		}
		return t
	}
	q, k, v := newTensor(0, 0), newTensor(0, 0), newTensor(0, 2)
	dO := newTensor(0, 1) // the loss is the sum of O's row 1
	for _, t := range []*dma.Tensor{q, k, v, dO} {
		defer t.Close()
	}
	w, _ := dev.NewWeights(1, 1, L)
	defer w.Close()
	w.Upload(ctx, []float32{0, 0})
	opt := dma.Options{Mode: dma.ModeRow, Window: 2, Causal: true, Weights: w}

	res, err := dev.Forward(ctx, q, k, v, opt)
	if err != nil {
		log.Fatal(err)
	}
	defer res.Close()
	g, err := dev.Backward(ctx, q, k, v, res, dO, opt, dma.BackwardOptions{Deterministic: true})
	if err != nil {
		log.Fatal(err)
	}
	defer g.Close()
	dv, _ := g.DV.Download(ctx)
	dd, _ := g.DDelta.Download(ctx)
	fmt.Printf("dV rows: %.2f %.2f\n", dv[0], dv[D])
	fmt.Printf("dDelta: %.2f %.2f\n", dd[0], dd[1])
	// Output:
	// dV rows: 0.50 0.50
	// dDelta: -4.00 4.00
}
