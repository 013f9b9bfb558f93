package kern

import (
	"context"
	"encoding/binary"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/vk"
)

// runTopW uploads ord ([B*Hb][Lk]), records select_topw for p and downloads tau, which
// starts filled with poison.
func runTopW(t *testing.T, k *Kernels, p *Params, ord []uint32) ([]Key, error) {
	t.Helper()
	d := k.Device()
	ctx := context.Background()
	params := newBuf(t, d, ParamsSize)
	ob := make([]byte, 4*len(ord))
	for i, x := range ord {
		binary.LittleEndian.PutUint32(ob[4*i:], x)
	}
	obuf := newBuf(t, d, int64(len(ob)))
	if err := obuf.Upload(ctx, 0, ob); err != nil {
		t.Fatal(err)
	}
	_, _, _, st := PlanSizes(p)
	tbuf := newBuf(t, d, st)
	err := d.Run(ctx, func(r *vk.Recorder) error {
		if err := r.Fill(tbuf, 0, tbuf.Size(), poison); err != nil {
			return err
		}
		if err := r.Update(params, 0, p.Bytes()); err != nil {
			return err
		}
		r.Barrier()
		return k.RecordTopW(r, p, params, obuf, tbuf)
	})
	if err != nil {
		return nil, err
	}
	return keys(download(t, tbuf)), nil
}

// TestSelectTopW: the decode thresholds equal the CPU plan's tau on random shapes, every
// kind of weights (ties, equal weights) and padding, w = 1 and w >= L, Lq < Lk.
func TestSelectTopW(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	rng := rand.New(rand.NewPCG(selectSeed(t), 31))
	for it := range 60 {
		lk := 1 + rng.IntN(700)
		if it%10 == 0 {
			lk = 70000 + rng.IntN(2000) // three radix digits of idx in play
		}
		lq := 1 + rng.IntN(min(lk, 6))
		w := 1 + rng.IntN(lk+2)
		switch it % 4 {
		case 0:
			w = 1
		case 1:
			w = min(w, 64)
		}
		b, hb := 1+rng.IntN(2), 1+rng.IntN(3)
		kind, pk := rng.IntN(numWeightKinds), rng.IntN(numPadKinds)
		ord := make([]uint32, b*hb*lk)
		for bh := range b * hb {
			x := genWeights(rng, kind, lk)
			for j := range lk {
				if pk == padNone || (pk == padSome && rng.IntN(5) != 0) {
					ord[bh*lk+j] = Ord(x[j])
				}
			}
		}
		if it%5 == 2 {
			// Exactly w valid keys in a row's prefix (bh 0, some row): tau is (0, 0) there,
			// the smallest key one position further.
			i := rng.IntN(lq)
			n := 0
			for j := 0; j <= lk-lq+i; j++ {
				if ord[j] != 0 {
					n++
				}
			}
			w = max(n, 1)
		}
		p := planParams(b, hb, lq, lk, w, ModeRow, true)
		got, err := runTopW(t, k, p, ord)
		if err != nil {
			t.Fatal(err)
		}
		for bh := range b * hb {
			want := fastTau(ord[bh*lk:(bh+1)*lk], w, lq)
			if i := firstDiff(got[bh*lq:(bh+1)*lq], want); i >= 0 {
				t.Fatalf("B=%d Hb=%d Lk=%d Lq=%d w=%d weights %d padding %d, bh %d: tau[%d] = %v, want %v",
					b, hb, lk, lq, w, kind, pk, bh, i, got[bh*lq+i], want[i])
			}
		}
	}
}

func TestSelectTopWErrors(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	ord := make([]uint32, 2*10)
	for _, c := range []struct {
		name string
		p    *Params
		want string
	}{
		{"mode shared", planParams(1, 2, 2, 10, 3, ModeShared, true), "mode row"},
		{"not causal", planParams(1, 2, 2, 10, 3, ModeRow, false), "mode row"},
		{"rows past the keys", func() *Params { p := planParams(1, 2, 2, 10, 3, ModeRow, true); p.PosOffset = 9; return p }(), "past Lk-1"},
		{"empty", planParams(1, 2, 0, 10, 3, ModeRow, true), "empty shape"},
	} {
		_, err := runTopW(t, k, c.p, ord)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
	}
}
