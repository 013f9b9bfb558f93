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

// TestSelectTopWAdvance: thresholds carried from step to step (one key appended per
// step) equal the CPU plan's tau at every step, for every kind of weights (equal weights
// make every new key join the best w), padding, rows that share the buffers at offsets,
// grids sized for longer caches; and the scratch's counters are zero after every step.
func TestSelectTopWAdvance(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(selectSeed(t), 47))
	for it := range 16 {
		b, hb := 1+rng.IntN(2), 1+rng.IntN(3)
		w := []int{1, 2, 7, 64, 300}[it%5]
		steps := 40
		lk0 := w + 2 + rng.IntN(400)
		if it == 3 {
			lk0 = 70000 // slices of the grid in play
		}
		total := lk0 + steps
		kind, pk := it%numWeightKinds, []int{padNone, padNone, padSome}[it%3]
		rows := b * hb
		ord := make([]uint32, rows*total)
		for r := range rows {
			x := genWeights(rng, kind, total)
			for j := range total {
				// Padding (ord 0) only where the prefix before the first step keeps
				// more than w candidates: the carried threshold must be a key.
				if pk == padNone || j < w+2 || rng.IntN(5) != 0 {
					ord[r*total+j] = Ord(x[j])
				}
			}
		}
		l := ordLayout{off: uint32(rng.IntN(50)), sl: uint32(total + rng.IntN(100))}
		maxLk := uint32(total + rng.IntN(100000))
		words := make([]byte, 4*(int(l.off)+rows*int(l.sl)))
		for r := range rows {
			for j := range total {
				binary.LittleEndian.PutUint32(words[4*(int(l.off)+r*int(l.sl)+j):], ord[r*total+j])
			}
		}
		obuf := newBuf(t, d, int64(len(words)))
		if err := obuf.Upload(ctx, 0, words); err != nil {
			t.Fatal(err)
		}
		p := planParams(b, hb, 1, total, w, ModeRow, true)
		p.OrdOff, p.OrdSL = l.off, l.sl
		stateRow, scratchWord := uint32(rng.IntN(5)), uint32(rng.IntN(9))
		state := newBuf(t, d, int64(stateRow+uint32(rows))*8)
		scratchWords := CarryScratchWords(p, maxLk)
		scratch := newBuf(t, d, (int64(scratchWord)+scratchWords)*4)
		// The state before the first step: tau of the first lk0 keys.
		init := make([]byte, state.Size())
		for r := range rows {
			want := fastTau(ord[r*total:r*total+lk0], w, 1)[0]
			if want == (Key{}) {
				t.Fatalf("setup: row %d's first %d keys hold at most w = %d candidates", r, lk0, w)
			}
			binary.LittleEndian.PutUint32(init[8*(int(stateRow)+r):], want.Ord)
			binary.LittleEndian.PutUint32(init[8*(int(stateRow)+r)+4:], want.Idx)
		}
		if err := state.Upload(ctx, 0, init); err != nil {
			t.Fatal(err)
		}
		params := newBuf(t, d, ParamsSize)
		_, _, _, st := PlanSizes(p)
		tau := newBuf(t, d, st)
		got := newBuf(t, d, int64(steps)*int64(rows)*8)
		err := d.Run(ctx, func(r *vk.Recorder) error {
			if err := r.Fill(scratch, 0, scratch.Size(), 0); err != nil {
				return err
			}
			for s := range steps {
				q := *p
				q.Lk = uint32(lk0 + 1 + s)
				q.PosOffset = int32(q.Lk - 1)
				if err := r.Fill(tau, 0, tau.Size(), poison); err != nil {
					return err
				}
				if err := r.Update(params, 0, q.Bytes()); err != nil {
					return err
				}
				if err := k.RecordTopWAdvance(r, &q, params, obuf, tau, Carry{State: state, StateRow: stateRow, Scratch: scratch, ScratchWord: scratchWord}, maxLk); err != nil {
					return err
				}
				if err := r.Copy(tau, 0, got, int64(s*rows)*8, int64(rows)*8); err != nil {
					return err
				}
				r.Barrier()
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		all := keys(download(t, got))
		for s := range steps {
			lk := lk0 + 1 + s
			for r := range rows {
				want := fastTau(ord[r*total:r*total+lk], w, 1)[0]
				if g := all[s*rows+r]; g != want {
					t.Fatalf("B=%d Hb=%d w=%d weights %s padding %d, Lk %d row %d: tau %v, want %v",
						b, hb, w, weightNames[kind], pk, lk, r, g, want)
				}
			}
		}
		for i, x := range u32s(download(t, scratch))[scratchWord : int64(scratchWord)+int64(rows)] {
			if x != 0 {
				t.Fatalf("row %d's counter is %d after the run, want 0", i, x)
			}
		}
		last := keys(download(t, state))[stateRow:]
		for r := range rows {
			if last[r] != all[(steps-1)*rows+r] {
				t.Fatalf("row %d: state %v after the last step, tau %v", r, last[r], all[(steps-1)*rows+r])
			}
		}
	}
}

func TestSelectTopWAdvanceErrors(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	buf := newBuf(t, d, 1<<16)
	c := Carry{State: buf, Scratch: buf}
	for _, x := range []struct {
		name string
		p    *Params
		want string
	}{
		{"two rows", planParams(1, 2, 2, 100, 3, ModeRow, true), "one row"},
		{"mode none", planParams(1, 2, 1, 100, 3, ModeNone, true), "mode row"},
		{"not the last position", func() *Params { p := planParams(1, 2, 1, 100, 3, ModeRow, true); p.PosOffset = 50; return p }(), "not the last"},
		{"no earlier threshold", planParams(1, 2, 1, 4, 3, ModeRow, true), "no earlier threshold"},
	} {
		err := d.Run(context.Background(), func(r *vk.Recorder) error {
			return k.RecordTopWAdvance(r, x.p, buf, buf, buf, c, 0)
		})
		if err == nil || !strings.Contains(err.Error(), x.want) {
			t.Errorf("%s: error %v, want one mentioning %q", x.name, err, x.want)
		}
	}
}
