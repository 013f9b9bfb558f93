package dma_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/internal/check"
)

// FuzzBackward draws valid shapes and options and checks Forward then Backward (both
// modes, every gradient) against the reference. The seeds run as a plain test.
func FuzzBackward(f *testing.F) {
	f.Add(uint8(1), uint8(9), uint8(9), uint8(2), uint8(1), uint8(0), uint8(0), uint8(1), uint8(0), true, false, uint64(1))
	f.Add(uint8(2), uint8(3), uint8(20), uint8(4), uint8(2), uint8(1), uint8(1), uint8(5), uint8(1), false, true, uint64(2))
	f.Add(uint8(1), uint8(30), uint8(7), uint8(3), uint8(3), uint8(2), uint8(2), uint8(40), uint8(2), true, true, uint64(3))
	f.Add(uint8(2), uint8(70), uint8(75), uint8(4), uint8(1), uint8(3), uint8(3), uint8(12), uint8(3), true, true, uint64(4))
	// Weights from V far apart (one key takes each row): gradients near zero.
	f.Add(uint8(1), uint8(20), uint8(75), uint8(4), uint8(0), uint8(3), uint8(97), uint8(12), uint8(1), true, true, uint64(43))
	f.Fuzz(func(t *testing.T, b, lq, lk, h, hkv, dsel, mode, w, wsel uint8, causal, half bool, seed uint64) {
		d := open(t)
		ds := []int{8, 32, 64, 96, 128, 256}
		c := check.Case{
			B: int(b%3) + 1, Lq: int(lq%80) + 1, Lk: int(lk%80) + 1, Hkv: int(hkv%3) + 1,
			D: ds[int(dsel)%len(ds)], Mode: dma.Mode(mode % 4), Window: int(w%90) + 1, Causal: causal,
			Backward: true,
		}
		c.H = c.Hkv * (int(h%3) + 1)
		if half { // 16-bit storage: fp16, or bf16 for odd seeds
			c.DType = dma.Float16
			if seed&1 == 1 {
				c.DType = dma.BFloat16
			}
		}
		switch wsel % 4 { // weights given, from V (both forms, Hb = H or Hkv), or none
		case 1:
			c.Weights, c.Form = check.WeightsParams, dma.FormExp
		case 2:
			c.Weights, c.Form, c.HbIsH = check.WeightsParams, dma.FormLinear, true
		case 3:
			c.Padding, c.HbIsH = true, true
		}
		if c.Mode == dma.ModeExplicit {
			c.Weights, c.Mask, c.Bias = check.WeightsNone, true, seed%3 == 0
		}
		if c.Mode == dma.ModeNone && wsel%4 == 0 {
			c.Weights = check.WeightsNone
		}
		o := check.Run(context.Background(), d, c, rand.New(rand.NewPCG(seed, 3)))
		if o.Err != nil || !o.Pass {
			t.Fatalf("%s: err %v, rel %.3g (tol %.3g), lse %.3g", c.Name(), o.Err, o.Rel, o.Tol, o.LSEAbs)
		}
	})
}
