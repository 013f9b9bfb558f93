package vk_test

import (
	"math/rand/v2"
	"os"
	"strconv"
	"testing"

	"github.com/dmavk/dmavk/vk"
)

func envi(n string, d int) int {
	if s := os.Getenv(n); s != "" {
		v, _ := strconv.Atoi(s)
		return v
	}
	return d
}

func TestTmpLeak(t *testing.T) {
	t.Setenv("DMAVK_CACHE_DIR", t.TempDir())
	N, pipe, run, newinst, trim, nocache := envi("N", 300), envi("PIPE", 1), envi("RUN", 1), envi("NEWINST", 10), envi("TRIM", 0), envi("NOCACHE", 0)
	every := envi("EVERY", 0)
	in, err := vk.NewInstance(vk.Config{})
	if err != nil {
		t.Skip(err)
	}
	pd, _ := in.Choose()
	inst := in
	rng := rand.New(rand.NewPCG(16, 17))
	var before int64
	for i := 0; i < N; i++ {
		if i == 5 {
			if trim != 0 {
				vk.TrimCHeap()
			}
			before = settledRSS(t)
		}
		if newinst != 0 && i%newinst == newinst-1 {
			if inst != in {
				inst.Close()
			}
			inst, _ = vk.NewInstance(vk.Config{})
		}
		pd, _ := inst.ChooseBy(strconv.Itoa(pd.Index))
		d, err := inst.Open(pd, vk.Features{DisablePipelineCache: nocache != 0})
		if err != nil {
			t.Fatal(err)
		}
		if pipe != 0 {
			p, err := d.NewPipeline(matmulDesc(t))
			if err != nil {
				t.Fatal(err)
			}
			if run != 0 {
				if err := leakCycle(d, p, rng); err != nil {
					t.Fatal(err)
				}
			}
			p.Close()
		}
		d.Close()
		if every != 0 && i%every == 0 {
			if trim != 0 {
				vk.TrimCHeap()
			}
			t.Logf("%d %.1f MiB", i, float64(settledRSS(t))/(1<<20))
		}
	}
	if trim != 0 {
		vk.TrimCHeap()
	}
	after := settledRSS(t)
	t.Logf("N=%d pipe=%d run=%d newinst=%d trim=%d nocache=%d: %.1f -> %.1f MiB, %.0f bytes/cycle", N, pipe, run, newinst, trim, nocache,
		float64(before)/(1<<20), float64(after)/(1<<20), float64(after-before)/float64(N-5))
}
