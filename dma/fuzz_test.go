package dma_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/internal/check"
)

// FuzzForward draws shapes and options; valid problems must match the reference,
// invalid ones must return an error (never panic or hang).
func FuzzForward(f *testing.F) {
	f.Add(uint8(1), uint8(9), uint8(9), uint8(2), uint8(1), uint8(0), uint8(0), uint8(3), true, false, uint64(1))
	f.Add(uint8(2), uint8(3), uint8(20), uint8(4), uint8(2), uint8(1), uint8(1), uint8(1), false, true, uint64(2))
	f.Add(uint8(1), uint8(30), uint8(7), uint8(3), uint8(3), uint8(2), uint8(2), uint8(40), true, true, uint64(3))
	f.Fuzz(func(t *testing.T, b, lq, lk, h, hkv, dsel, mode, w uint8, causal, half bool, seed uint64) {
		d := open(t)
		ds := []int{8, 32, 64, 96, 128, 256, 12}
		c := check.Case{
			B: int(b%3) + 1, Lq: int(lq%80) + 1, Lk: int(lk%80) + 1, H: int(h%5) + 1, Hkv: int(hkv%5) + 1,
			D: ds[int(dsel)%len(ds)], Mode: dma.Mode(mode % 4), Window: int(w % 90), Causal: causal,
		}
		if half { // 16-bit storage: fp16, or bf16 for odd seeds
			c.DType = dma.Float16
			if seed&1 == 1 {
				c.DType = dma.BFloat16
			}
		}
		if c.Mode == dma.ModeExplicit {
			c.Weights, c.Mask = check.WeightsNone, true
		}
		valid := c.H%c.Hkv == 0 && c.D%8 == 0 && (c.Window >= 1 || c.Mode >= dma.ModeNone)
		o := check.Run(context.Background(), d, c, rand.New(rand.NewPCG(seed, 2)))
		if !valid {
			if o.Err == nil {
				t.Fatalf("%s: invalid problem accepted", c.Name())
			}
			return
		}
		if o.Err != nil || !o.Pass {
			t.Fatalf("%s: err %v, rel %.3g (tol %.3g), lse %.3g", c.Name(), o.Err, o.Rel, o.Tol, o.LSEAbs)
		}
	})
}
