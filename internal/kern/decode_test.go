package kern_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/dmavk/dmavk/internal/kern"
	"github.com/dmavk/dmavk/ref"
)

// TestDecodeAttention: decode_attn against the float64 reference on a few query rows
// over key sequences of one to several slices, every storage, GQA with both bias-head
// layouts, padding, w = 1 and w >= L, equal weights, softcap, BHLD, NaN in V.
func TestDecodeAttention(t *testing.T) {
	e := newAttnEnv(t)
	row, none := ref.ModeRow, ref.ModeNone
	var cs []attnCase
	for _, lq := range []int{1, 2, 4} {
		for _, lk := range []int{1, 37, 1100, 2500} {
			if lk < lq {
				continue
			}
			cs = append(cs,
				attnCase{name: fmt.Sprintf("row/Lq%d/Lk%d", lq, lk), Lq: lq, Lk: lk, mode: row, causal: true, w: 16},
				attnCase{name: fmt.Sprintf("none/Lq%d/Lk%d", lq, lk), Lq: lq, Lk: lk, mode: none, causal: true})
		}
	}
	cs = append(cs,
		attnCase{name: "none/noncausal", Lq: 3, Lk: 300, mode: none},
		attnCase{name: "row/w1", Lq: 2, Lk: 500, mode: row, causal: true, w: 1},
		attnCase{name: "row/w-ge-L", Lq: 2, Lk: 90, mode: row, causal: true, w: 200},
		attnCase{name: "row/equal", Lq: 4, Lk: 1500, mode: row, causal: true, w: 100, weights: "equal"},
		attnCase{name: "row/ties", Lq: 4, Lk: 700, mode: row, causal: true, w: 50, weights: "ties"},
		attnCase{name: "row/gqa-hbkv/pad", B: 2, H: 4, Hkv: 2, hbKV: true, Lq: 2, Lk: 1200, mode: row, causal: true, w: 40, pad: "rand"},
		attnCase{name: "row/mqa-hb-h/bhld", B: 1, H: 4, Hkv: 1, Lq: 1, Lk: 1300, mode: row, causal: true, w: 64, bhld: true},
		attnCase{name: "row/gqa8-hbkv/Lq2", B: 1, H: 16, Hkv: 2, hbKV: true, Lq: 2, Lk: 1100, mode: row, causal: true, w: 30},
		attnCase{name: "none/gqa8/Lq3", B: 1, H: 8, Hkv: 1, Lq: 3, Lk: 900, mode: none, causal: true},
		attnCase{name: "none/mqa4/Lq3/D32", B: 1, H: 4, Hkv: 1, Lq: 3, Lk: 700, D: 32, mode: none, causal: true},
		attnCase{name: "row/softcap/D128", Lq: 2, Lk: 600, D: 128, mode: row, causal: true, w: 32, softcap: 3},
		attnCase{name: "row/f16", Lq: 3, Lk: 1100, mode: row, causal: true, w: 30, f16: true},
		// Grids sized for longer caches (repeated steps reuse one recording as Lk grows).
		attnCase{name: "row/f16/grid200K", Lq: 1, Lk: 1700, mode: row, causal: true, w: 300, f16: true, maxLk: 200000},
		attnCase{name: "none/gqa/grid5K", H: 4, Hkv: 2, Lq: 2, Lk: 333, mode: none, causal: true, maxLk: 5000},
		attnCase{name: "none/bf16/D96", Lq: 1, Lk: 1025, D: 96, mode: none, causal: true, bf16: true},
		attnCase{name: "row/nan-v", Lq: 2, Lk: 200, mode: row, causal: true, w: 8, nanKey: 196, weights: "equal"},
		attnCase{name: "err/explicit", Lq: 2, Lk: 20, mode: ref.ModeExplicit, causal: true, maskShape: []int{1, 1, 2, 20},
			wantErr: "row with causality or none"},
		attnCase{name: "err/rows", Lq: 5, Lk: 20, mode: none, causal: true, wantErr: "query rows"},
	)
	for _, rows := range []uint32{0, 16} {
		// 0: the device's choice (4 rows on lavapipe's narrow subgroups); 16: the GPU's,
		// so that up to 16 query heads share a workgroup here too.
		restore := kern.SetDecodeRows(rows)
		for _, c := range cs {
			c.decode = true
			if !strings.Contains(c.name, "nan") {
				c.nanKey = -1
			}
			t.Run(fmt.Sprintf("rows%d/%s", rows, c.name), func(t *testing.T) { runAttnCase(t, e, c) })
		}
		restore()
	}
}
