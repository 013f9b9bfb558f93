package dma_test

import (
	"context"
	"fmt"
	"log"

	"github.com/dmavk/dmavk/dma"
)

// Each row keeps its single best-weighted key (Window 1), so O is that key's value row.
func ExampleDevice_Forward() {
	ctx := context.Background()
	dev, err := dma.Open(dma.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()

	const L, D = 5, 8
	s := dma.Shape{B: 1, L: L, H: 1, D: D}
	q, _ := dev.NewTensor(dma.Float32, s, dma.BLHD)
	k, _ := dev.NewTensor(dma.Float32, s, dma.BLHD)
	v, _ := dev.NewTensor(dma.Float32, s, dma.BLHD)
	defer q.Close()
	defer k.Close()
	defer v.Close()
	vals := make([]float32, L*D)
	for j := 0; j < L; j++ {
		for d := 0; d < D; d++ {
			vals[j*D+d] = float32(10 * j) // value row j is all 10*j
		}
	}
	q.Upload(ctx, make([]float32, L*D))
	k.Upload(ctx, make([]float32, L*D))
	v.Upload(ctx, vals)

	w, _ := dev.NewWeights(1, 1, L)
	defer w.Close()
	w.Upload(ctx, []float32{0.5, 0.1, 0.9, 0.3, 0.9}) // key 4 ties key 2: the later wins

	res, err := dev.Forward(ctx, q, k, v, dma.Options{Mode: dma.ModeRow, Window: 1, Causal: true, Weights: w})
	if err != nil {
		log.Fatal(err)
	}
	defer res.Close()
	o, _ := res.O.Download(ctx)
	for i := 0; i < L; i++ {
		fmt.Printf("row %d reads key %.0f\n", i, o[i*D]/10)
	}
	// Output:
	// row 0 reads key 0
	// row 1 reads key 0
	// row 2 reads key 2
	// row 3 reads key 2
	// row 4 reads key 4
}

// With A = 0 (the public initialisation) every exp-form weight is exactly 1.
func ExampleDevice_DynamicWeights() {
	ctx := context.Background()
	dev, err := dma.Open(dma.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()
	v, _ := dev.NewTensor(dma.Float16, dma.Shape{B: 1, L: 3, H: 2, D: 8}, dma.BLHD)
	defer v.Close()
	data := make([]float32, 3*2*8)
	for i := range data {
		data[i] = float32(i%5) - 2
	}
	v.Upload(ctx, data)
	wp := dma.WeightParams{Hb: 2, Wdt: make([]float32, 2*8*2), A: []float32{0, 0}, Form: dma.FormExp}
	for i := range wp.Wdt {
		wp.Wdt[i] = 0.1
	}
	w, err := dev.DynamicWeights(ctx, v, &wp)
	if err != nil {
		log.Fatal(err)
	}
	defer w.Close()
	got, _ := w.Download(ctx)
	fmt.Println(got)
	// Output: [1 1 1 1 1 1]
}

// Token by token: each step appends the new key (its value, and its weight computed
// once) and attends the new query row over the whole cache, in one submission
// (AppendAttendInto). Window 1 keeps the single best-weighted key so far, so O is that
// key's value row.
func ExampleKVCache() {
	ctx := context.Background()
	dev, err := dma.Open(dma.Config{})
	if err != nil {
		log.Fatal(err)
	}
	defer dev.Close()

	const D = 8
	cache, err := dev.NewKVCache(dma.KVCacheConfig{Sequences: 1, Capacity: 16, KVHeads: 1, HeadDim: D, DType: dma.Float32})
	if err != nil {
		log.Fatal(err)
	}
	defer cache.Close()
	row := func() *dma.Tensor {
		t, err := dev.NewTensor(dma.Float32, dma.Shape{B: 1, L: 1, H: 1, D: D}, dma.BLHD)
		if err != nil {
			log.Fatal(err)
		}
		return t
	}
	fill := func(x float32) []float32 {
		vals := make([]float32, D)
		for d := range vals {
			vals[d] = x
		}
		return vals
	}
	// The same tensors at every step (new contents each time): the cache records the
	// step once and submits the recording again at each call.
	q, k, v := row(), row(), row()
	w, err := dev.NewWeights(1, 1, 1)
	if err != nil {
		log.Fatal(err)
	}
	for _, x := range []interface{ Close() error }{q, k, v, w} {
		defer x.Close()
	}
	q.Upload(ctx, fill(0))
	k.Upload(ctx, fill(0))
	res, err := cache.NewResult(q)
	if err != nil {
		log.Fatal(err)
	}
	defer res.Close()
	for step, weight := range []float32{0.5, 0.1, 0.9, 0.3} {
		v.Upload(ctx, fill(float32(10*step)))
		w.Upload(ctx, []float32{weight})
		if err := cache.AppendAttendInto(ctx, 0, k, v, w, q, res, dma.Options{Mode: dma.ModeRow, Window: 1, Causal: true}); err != nil {
			log.Fatal(err)
		}
		o, _ := res.O.Download(ctx)
		fmt.Printf("step %d reads key %.0f of %d\n", step, o[0]/10, cache.Len(0))
	}
	// Output:
	// step 0 reads key 0 of 1
	// step 1 reads key 0 of 2
	// step 2 reads key 2 of 3
	// step 3 reads key 2 of 4
}
