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

// ordLayout places the ord rows in a larger buffer, as a KV cache holds them: row bh
// at element off + bh*sl (sl 0: packed), the rest filled with valid-looking junk; the
// grid sized for maxLk keys.
type ordLayout struct{ off, sl, maxLk uint32 }

// runTopW uploads ord ([B*Hb][Lk]) in layout l, records select_topw for p and downloads
// tau, which starts filled with poison.
func runTopW(t *testing.T, k *Kernels, p *Params, ord []uint32, l ordLayout) ([]Key, error) {
	t.Helper()
	d := k.Device()
	ctx := context.Background()
	params := newBuf(t, d, ParamsSize)
	rows := int(p.B * p.Hb)
	sl := int(l.sl)
	if sl == 0 {
		sl = int(p.Lk)
	}
	words := make([]uint32, int(l.off)+rows*sl)
	for i := range words {
		words[i] = 0x9e3779b9 ^ uint32(i)*2654435761 | 1
	}
	lk := int(p.Lk)
	for r := range rows {
		if len(ord) >= (r+1)*lk {
			copy(words[int(l.off)+r*sl:], ord[r*lk:(r+1)*lk])
		}
	}
	ob := make([]byte, 4*len(words))
	for i, x := range words {
		binary.LittleEndian.PutUint32(ob[4*i:], x)
	}
	obuf := newBuf(t, d, int64(len(ob)))
	if err := obuf.Upload(ctx, 0, ob); err != nil {
		t.Fatal(err)
	}
	q := *p
	q.OrdOff, q.OrdSL = l.off, l.sl
	_, _, _, st := PlanSizes(p)
	tbuf := newBuf(t, d, st)
	sel := newBuf(t, d, max(TopWScratchSize(p), 4))
	err := d.Run(ctx, func(r *vk.Recorder) error {
		if err := r.Fill(tbuf, 0, tbuf.Size(), poison); err != nil {
			return err
		}
		// Junk in the scratch: RecordTopW must clear it.
		if err := r.Fill(sel, 0, sel.Size(), 7); err != nil {
			return err
		}
		if err := r.Update(params, 0, q.Bytes()); err != nil {
			return err
		}
		r.Barrier()
		return k.RecordTopW(r, &q, params, obuf, tbuf, sel, l.maxLk)
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
		var l ordLayout
		if it%3 == 1 {
			// A cache's layout: rows further apart, an offset, a grid for longer rows.
			l = ordLayout{off: uint32(rng.IntN(50)), sl: uint32(lk + rng.IntN(3000)), maxLk: uint32(lk + rng.IntN(200000))}
		}
		got, err := runTopW(t, k, p, ord, l)
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
		_, err := runTopW(t, k, c.p, ord, ordLayout{})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one mentioning %q", c.name, err, c.want)
		}
	}
}
