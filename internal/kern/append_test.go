package kern

import (
	"context"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/internal/vktest"
	"github.com/dmavk/dmavk/vk"
)

// TestRecordAppend: kv_append writes exactly the new keys' K and V elements and ords,
// whatever the storage, with rows that start mid-word (16-bit, odd Hkv*D), at several
// positions in one recording (the position comes from params), and leaves every other
// element of the cache as it was.
func TestRecordAppend(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(selectSeed(t), 53))
	for _, c := range []struct {
		storage          Storage
		hkv, dim, hb, n  int
		seqs, seq, capty int
	}{
		{StorageF32, 2, 8, 2, 1, 2, 1, 40},
		{StorageF16, 2, 8, 4, 3, 3, 2, 50},
		{StorageF16, 1, 3, 1, 1, 2, 1, 31}, // odd rows: every other key starts mid-word
		{StorageBF16, 3, 5, 3, 4, 2, 0, 33},
		{StorageF16, 1, 5, 1, 600, 1, 0, 2000}, // a prefill chunk over many workgroups
	} {
		es := 4
		if c.storage.Packed() {
			es = 2
		}
		row := c.hkv * c.dim
		cacheBytes := (c.seqs*c.capty*row*es + 3) &^ 3
		junk := func(n int) []byte {
			b := make([]byte, n)
			for i := range b {
				b[i] = byte(rng.IntN(256))
			}
			return b
		}
		kInit, vInit := junk(cacheBytes), junk(cacheBytes)
		ordInit := junk(4 * c.seqs * c.hb * c.capty)
		cacheK, cacheV, cacheOrd := newBuf(t, d, int64(cacheBytes)), newBuf(t, d, int64(cacheBytes)), newBuf(t, d, int64(len(ordInit)))
		for _, x := range []struct {
			b *vk.Buffer
			v []byte
		}{{cacheK, kInit}, {cacheV, vInit}, {cacheOrd, ordInit}} {
			if err := x.b.Upload(ctx, 0, x.v); err != nil {
				t.Fatal(err)
			}
		}
		srcBytes := (c.n*row*es + 3) &^ 3
		srcK, srcV := newBuf(t, d, int64(srcBytes)), newBuf(t, d, int64(srcBytes))
		weights := newBuf(t, d, int64(4*c.hb*c.n))
		params := newBuf(t, d, ParamsSize)
		wantK, wantV, wantOrd := append([]byte(nil), kInit...), append([]byte(nil), vInit...), append([]byte(nil), ordInit...)
		view := View{Off: uint32(c.seq * c.capty * row), SB: uint32(c.capty * row), SL: uint32(row), SH: uint32(c.dim)}
		// Three appends at consecutive positions through one recording.
		at := 1 + rng.IntN(3)
		for range 3 {
			kb, vb := junk(srcBytes), junk(srcBytes)
			wb := make([]byte, 4*c.hb*c.n)
			for i := range c.hb * c.n {
				x := float32(rng.NormFloat64())
				switch i % 7 {
				case 3:
					x = float32(math.Copysign(0, -1))
				case 5: // NaNs of any sign and payload rank as one, above +Inf
					x = math.Float32frombits(0x7f800001 | rng.Uint32()&0x807fffff)
				case 6:
					x = float32(math.Inf(1 - 2*(i/7%2)))
				}
				binary.LittleEndian.PutUint32(wb[4*i:], math.Float32bits(x))
			}
			for _, x := range []struct {
				b *vk.Buffer
				v []byte
			}{{srcK, kb}, {srcV, vb}, {weights, wb}} {
				if err := x.b.Upload(ctx, 0, x.v); err != nil {
					t.Fatal(err)
				}
			}
			p := Params{B: 1, Lq: uint32(c.n), Hkv: uint32(c.hkv), D: uint32(c.dim), Hb: uint32(c.hb), Storage: c.storage,
				PosOffset: int32(at), K: view, V: view, OrdOff: uint32(c.seq * c.hb * c.capty), OrdSL: uint32(c.capty)}
			if err := params.Upload(ctx, 0, p.Bytes()); err != nil {
				t.Fatal(err)
			}
			if err := d.Run(ctx, func(r *vk.Recorder) error {
				return k.RecordAppend(r, &p, params, &AppendBuffers{srcK, srcV, weights, cacheK, cacheV, cacheOrd})
			}); err != nil {
				t.Fatal(err)
			}
			first := (c.seq*c.capty + at) * row * es
			copy(wantK[first:first+c.n*row*es], kb)
			copy(wantV[first:first+c.n*row*es], vb)
			for hb := range c.hb {
				for j := range c.n {
					x := math.Float32frombits(binary.LittleEndian.Uint32(wb[4*(hb*c.n+j):]))
					binary.LittleEndian.PutUint32(wantOrd[4*((c.seq*c.hb+hb)*c.capty+at+j):], Ord(x))
				}
			}
			at += c.n
		}
		for _, x := range []struct {
			name string
			b    *vk.Buffer
			want []byte
		}{{"K", cacheK, wantK}, {"V", cacheV, wantV}, {"ord", cacheOrd, wantOrd}} {
			got := download(t, x.b)
			for i := range x.want {
				if got[i] != x.want[i] {
					t.Fatalf("%v Hkv %d D %d n %d: cache %s byte %d = %#x, want %#x", c.storage, c.hkv, c.dim, c.n, x.name, i, got[i], x.want[i])
				}
			}
		}
	}
}

func TestRecordAppendErrors(t *testing.T) {
	d := vktest.Device(t, vk.Features{})
	k := New(d)
	defer k.Close()
	small, big := newBuf(t, d, 16), newBuf(t, d, 1<<16)
	v := View{SL: 16, SH: 8}
	ok := Params{Lq: 1, Hkv: 2, D: 8, Hb: 2, PosOffset: 3, K: v, V: v, OrdSL: 100}
	for _, x := range []struct {
		name string
		p    func(p *Params)
		b    AppendBuffers
		want string
	}{
		{"no keys", func(p *Params) { p.Lq = 0 }, AppendBuffers{big, big, big, big, big, big}, "0 keys"},
		{"views differ", func(p *Params) { p.V.Off = 16 }, AppendBuffers{big, big, big, big, big, big}, "views differ"},
		{"short rows", func(p *Params) { p.K.SL, p.V.SL = 8, 8 }, AppendBuffers{big, big, big, big, big, big}, "fewer than Hkv*D"},
		{"small K", func(p *Params) {}, AppendBuffers{small, big, big, big, big, big}, "K buffer has 16 bytes"},
		{"small cache", func(p *Params) { p.PosOffset, p.OrdSL = 5000, 10000 }, AppendBuffers{big, big, big, big, big, big}, "cache K buffer"},
	} {
		p := ok
		x.p(&p)
		b := x.b
		err := d.Run(context.Background(), func(r *vk.Recorder) error { return k.RecordAppend(r, &p, big, &b) })
		if err == nil || !strings.Contains(err.Error(), x.want) {
			t.Errorf("%s: error %v, want one mentioning %q", x.name, err, x.want)
		}
	}
}
