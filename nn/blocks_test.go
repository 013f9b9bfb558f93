package nn_test

import (
	"context"
	"fmt"
	"math"
	"sort"
	"testing"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/nn"
	"github.com/dmavk/dmavk/ref"
	"github.com/dmavk/dmavk/vk"
	"github.com/stretchr/testify/require"
)

// matvec64 returns x W^T for x [m, in] and W [out, in], in float64.
func matvec64(x []float64, w []float32, m, in, out int) []float64 {
	y := make([]float64, m*out)
	for i := 0; i < m; i++ {
		for o := 0; o < out; o++ {
			s := 0.0
			for k := 0; k < in; k++ {
				s += x[i*in+k] * float64(w[o*in+k])
			}
			y[i*out+o] = s
		}
	}
	return y
}

func silu(x float64) float64 { return x / (1 + math.Exp(-x)) }

func TestGatedMLP(t *testing.T) {
	n := open(t)
	rng := seed(t)
	ctx := context.Background()
	for _, dt := range dtypes {
		for _, m := range []int{1, 4, 37} {
			t.Run(fmt.Sprintf("%v/%d", dt, m), func(t *testing.T) {
				const hidden, inter = 36, 70
				g := nn.Round(dt, randv(rng, inter*hidden, 0.5))
				u := nn.Round(dt, randv(rng, inter*hidden, 0.5))
				d := nn.Round(dt, randv(rng, hidden*inter, 0.5))
				mlp, err := n.NewGatedMLP(ctx, nn.ArrayOf("g", dt, g, inter, hidden), nn.ArrayOf("u", dt, u, inter, hidden), nn.ArrayOf("d", dt, d, hidden, inter), nil, nil, nil)
				require.NoError(t, err)
				defer mlp.Close()
				b, err := mlp.NewBuffers(n, m)
				require.NoError(t, err)
				defer b.Close()
				x := randv(rng, m*hidden, 1)
				xs := tensor(t, n, dma.Float32, m, hidden, x)
				y := tensor(t, n, dma.Float32, m, hidden, nil)
				run(t, n, func(r *vk.Recorder) error { return mlp.Record(n, r, y, xs, b) })
				gv, uv := matvec64(f64(x), g, m, hidden, inter), matvec64(f64(x), u, m, hidden, inter)
				h := make([]float64, len(gv))
				for i := range h {
					h[i] = silu(gv[i]) * uv[i]
				}
				near(t, matvec64(h, d, m, inter, hidden), download(t, y), 1e-5*math.Sqrt(inter), "mlp")
			})
		}
	}
}

// TestProductKeyExperts against transformers' DogeCDMoE routed part, written out in
// float64: the router's output read as view(2, N, K), the top experts of x[a] + y[b],
// softmax weights, silu(down . h) * w summed over up.
func TestProductKeyExperts(t *testing.T) {
	n := open(t)
	rng := seed(t)
	ctx := context.Background()
	for _, c := range []struct {
		experts, top, tokens int
		norm                 bool
		dt                   dma.DType
	}{{64, 4, 5, false, dma.Float32}, {64, 4, 1, true, dma.BFloat16}, {100, 17, 3, false, dma.Float16}, {256, 64, 2, false, dma.Float32}} {
		t.Run(fmt.Sprintf("%d/%d/%d/%v", c.experts, c.top, c.tokens, c.dt), func(t *testing.T) {
			const hidden = 40
			keys := int(math.Sqrt(float64(c.experts)))
			router := nn.Round(c.dt, randv(rng, 2*keys*hidden, 1))
			down := nn.Round(c.dt, randv(rng, c.experts*hidden, 1))
			up := nn.Round(c.dt, randv(rng, c.experts*hidden, 1))
			e, err := n.NewProductKeyExperts(ctx, nn.ArrayOf("r", c.dt, router, 2*keys, hidden), nn.ArrayOf("d", c.dt, down, c.experts, hidden), nn.ArrayOf("u", c.dt, up, c.experts, hidden), c.top, c.norm)
			require.NoError(t, err)
			defer e.Close()
			b, err := e.NewBuffers(n, c.tokens)
			require.NoError(t, err)
			defer b.Close()
			N := c.tokens
			h := randv(rng, N*hidden, 1)
			hs := tensor(t, n, dma.Float32, N, hidden, h)
			base := randv(rng, N*hidden, 1)
			y := tensor(t, n, dma.Float32, N, hidden, base)
			run(t, n, func(r *vk.Recorder) error {
				if err := e.RecordRouter(r, b, 0, hs); err != nil {
					return err
				}
				if err := e.RecordRoute(n, r, b, N); err != nil {
					return err
				}
				return e.RecordApply(n, r, b, 0, y, hs)
			})
			flat := matvec64(f64(h), router, N, hidden, 2*keys) // [N][2K], read as [2][N][K]
			want := f64(base)
			for tok := 0; tok < N; tok++ {
				xs := flat[tok*keys : (tok+1)*keys]
				ys := flat[(N+tok)*keys : (N+tok+1)*keys]
				type cand struct {
					s float64
					e int
				}
				var all []cand
				for a := 0; a < keys; a++ {
					for bb := 0; bb < keys; bb++ {
						all = append(all, cand{xs[a] + ys[bb], a*keys + bb})
					}
				}
				sort.Slice(all, func(i, j int) bool { return all[i].s > all[j].s })
				sum := 0.0
				ws := make([]float64, c.top)
				for i := 0; i < c.top; i++ {
					ws[i] = math.Exp(all[i].s - all[0].s)
					sum += ws[i]
				}
				for i := 0; i < c.top; i++ {
					ws[i] /= sum
					ex := all[i].e
					dot := 0.0
					for k := 0; k < hidden; k++ {
						dot += float64(down[ex*hidden+k]) * float64(h[tok*hidden+k])
					}
					s := silu(dot) * ws[i]
					for k := 0; k < hidden; k++ {
						want[tok*hidden+k] += s * float64(up[ex*hidden+k])
					}
				}
			}
			near(t, want, download(t, y), 1e-5*math.Sqrt(hidden), "experts")
		})
	}
}

// TestAttentionBlock: the DMA attention block (projections, q/k norms, RoPE, dynamic
// weights, DMA with the top Window keys, output projection) against a float64 CPU
// computation with package ref's attention.
func TestAttentionBlock(t *testing.T) {
	n := open(t)
	rng := seed(t)
	ctx := context.Background()
	d := n.DMA()
	for _, c := range []struct {
		T, window int
		dt        dma.DType
	}{{37, 8, dma.Float32}, {50, 64, dma.Float32}, {29, 5, dma.BFloat16}} {
		t.Run(fmt.Sprintf("T%d/w%d/%v", c.T, c.window, c.dt), func(t *testing.T) {
			const hidden, heads, kvh, hd = 32, 4, 2, 16
			cfg := nn.AttentionConfig{Hidden: hidden, Heads: heads, KVHeads: kvh, HeadDim: hd, Window: c.window, Eps: 1e-6, DType: c.dt}
			arr := func(name string, scale float64, shape ...int) (*nn.Array, []float32) {
				k := 1
				for _, s := range shape {
					k *= s
				}
				v := randv(rng, k, scale)
				return nn.ArrayOf(name, dma.Float32, v, shape...), v
			}
			wq, q := arr("q", 0.3, heads*hd, hidden)
			wk, k := arr("k", 0.3, kvh*hd, hidden)
			wv, v := arr("v", 0.3, kvh*hd, hidden)
			wo, o := arr("o", 0.3, hidden, heads*hd)
			wdt, dtw := arr("dt", 0.3, kvh, kvh*hd)
			qn, qnv := arr("qn", 1, hd)
			kn, knv := arr("kn", 1, hd)
			aa := []float32{0.7, -1.1}
			A := nn.ArrayOf("A", dma.Float32, aa, kvh)
			blk, err := n.NewAttention(ctx, cfg, &nn.AttentionWeights{Q: wq, K: wk, V: wv, O: wo, DtProj: wdt, QNorm: qn, KNorm: kn, A: A})
			require.NoError(t, err)
			defer blk.Close()
			T := c.T
			x := randv(rng, T*hidden, 1)
			xs := tensor(t, n, dma.Float32, T, hidden, x)
			rope := &nn.RoPE{Theta: 10000, HeadDim: hd}
			pos := make([]int, T)
			for i := range pos {
				pos[i] = i
			}
			cs := tensor(t, n, dma.Float32, T, hd, rope.Table(pos, T-1))
			pb, err := blk.NewProjectBuffers(n, T)
			require.NoError(t, err)
			defer pb.Close()
			qt, err := d.NewTensor(c.dt, dma.Shape{B: 1, L: T, H: heads, D: hd}, dma.BLHD)
			require.NoError(t, err)
			defer qt.Close()
			kt, err := d.NewTensor(c.dt, dma.Shape{B: 1, L: T, H: kvh, D: hd}, dma.BLHD)
			require.NoError(t, err)
			defer kt.Close()
			vt, err := d.NewTensor(c.dt, dma.Shape{B: 1, L: T, H: kvh, D: hd}, dma.BLHD)
			require.NoError(t, err)
			defer vt.Close()
			w, err := d.NewWeights(1, kvh, T)
			require.NoError(t, err)
			defer w.Close()
			qv, _ := nn.ViewOf(qt)
			kv, _ := nn.ViewOf(kt)
			vv, _ := nn.ViewOf(vt)
			run(t, n, func(r *vk.Recorder) error {
				if err := blk.RecordProject(r, pb, xs); err != nil {
					return err
				}
				return blk.RecordQKV(n, r, pb, 0, T, qv, kv, vv, w, 0, cs)
			})
			opt := blk.Options()
			opt.Weights = w
			res, err := d.Forward(ctx, qt, kt, vt, opt)
			require.NoError(t, err)
			defer res.Close()
			ov, _ := nn.ViewOf(res.O)
			y := tensor(t, n, dma.Float32, T, hidden, nil)
			run(t, n, func(r *vk.Recorder) error { return blk.O.Record(r, y, ov, pb.Scratch) })

			// float64: projections, per-head norm, RoPE (transformers' float32 angles).
			x64 := f64(x)
			qf, kf, vf := matvec64(x64, q, T, hidden, heads*hd), matvec64(x64, k, T, hidden, kvh*hd), matvec64(x64, v, T, hidden, kvh*hd)
			normRope := func(a []float64, nh int, wn []float32) *ref.Tensor4 {
				out := ref.NewTensor4(1, T, nh, hd)
				for i := 0; i < T; i++ {
					for h := 0; h < nh; h++ {
						row := a[(i*nh+h)*hd : (i*nh+h+1)*hd]
						ss := 0.0
						for _, e := range row {
							ss += e * e
						}
						inv := 1 / math.Sqrt(ss/hd+1e-6)
						nr := make([]float64, hd)
						for j := range nr {
							nr[j] = row[j] * inv * float64(wn[j])
						}
						for j := 0; j < hd; j++ {
							f := j % (hd / 2)
							ang := float64(rope.InvFreq()[f] * float32(i))
							rot := -nr[(j+hd/2)%hd]
							if j >= hd/2 {
								rot = nr[j-hd/2]
							}
							out.Set(0, i, h, j, nr[j]*math.Cos(ang)+rot*math.Sin(ang))
						}
					}
				}
				return out
			}
			q4, k4 := normRope(qf, heads, qnv), normRope(kf, kvh, knv)
			v4 := ref.NewTensor4(1, T, kvh, hd)
			copy(v4.Data, vf)
			// The dynamic weights from v, then the kernels' inputs rounded to the dtype.
			dts := matvec64(vf, dtw, T, kvh*hd, kvh)
			delta := make([]float64, kvh*T)
			for i := 0; i < T; i++ {
				for h := 0; h < kvh; h++ {
					delta[h*T+i] = float64(float32(math.Exp(float64(aa[h]) * math.Log1p(math.Exp(dts[i*kvh+h])))))
				}
			}
			for _, t4 := range []*ref.Tensor4{q4, k4, v4} {
				r32 := nn.Round(c.dt, ref.ToFloat32Slice(t4.Data))
				copy(t4.Data, f64(r32))
			}
			o4, _, err := ref.Forward(q4, k4, v4, delta, kvh, ref.Options{Window: c.window, Mode: ref.ModeRow, Causal: true})
			require.NoError(t, err)
			want := matvec64(o4.Data, o, T, heads*hd, hidden)
			tol := 1e-5
			if c.dt == dma.BFloat16 {
				tol = 1e-2
			}
			near(t, want, download(t, y), tol, "attention block")
		})
	}
}

// TestFusedResidualNorm: a product (or the gated MLP) whose partial sums go straight
// into the residual and norm pass gives what the separate passes give.
func TestFusedResidualNorm(t *testing.T) {
	n := open(t)
	rng := seed(t)
	ctx := context.Background()
	for _, dt := range dtypes {
		for _, m := range []int{1, 4} {
			t.Run(fmt.Sprintf("%v/%d", dt, m), func(t *testing.T) {
				const hidden, inter = 52, 300
				vec := func(scale float64) *nn.Vector {
					v, err := n.NewVector(ctx, nn.ArrayOf("v", dt, randv(rng, hidden, scale), hidden))
					require.NoError(t, err)
					t.Cleanup(func() { v.Close() })
					return v
				}
				g, w := vec(2), vec(2)
				arr := func(out, in int) *nn.Array { return nn.ArrayOf("w", dt, randv(rng, out*in, 0.3), out, in) }
				mlp, err := n.NewGatedMLP(ctx, arr(inter, hidden), arr(inter, hidden), arr(hidden, inter), nil, nil, nil)
				require.NoError(t, err)
				defer mlp.Close()
				require.True(t, mlp.FusesResidual(m) && mlp.Down.FusesResidual(m))
				b, err := mlp.NewBuffers(n, m)
				require.NoError(t, err)
				defer b.Close()
				x0, in := randv(rng, m*hidden, 1), randv(rng, m*hidden, 1)
				const eps = 1e-6
				// The gated MLP, fused and not.
				xa, ya := tensor(t, n, dma.Float32, m, hidden, x0), tensor(t, n, dma.Float32, m, hidden, nil)
				ins := tensor(t, n, dma.Float32, m, hidden, in)
				run(t, n, func(r *vk.Recorder) error { return mlp.RecordResidualNorm(n, r, xa, ins, g, ya, w, eps, b) })
				xb, yb := tensor(t, n, dma.Float32, m, hidden, x0), tensor(t, n, dma.Float32, m, hidden, nil)
				mo := tensor(t, n, dma.Float32, m, hidden, nil)
				run(t, n, func(r *vk.Recorder) error {
					if err := mlp.Record(n, r, mo, ins, b); err != nil {
						return err
					}
					return n.RecordResidualNorm(r, xb, mo, g, yb, w, eps)
				})
				near(t, f64(download(t, xb)), download(t, xa), 1e-6, "gated residual")
				near(t, f64(download(t, yb)), download(t, ya), 1e-6, "gated norm")
				// A plain product: the same bits.
				lin, err := n.NewLinear(ctx, arr(hidden, inter), nil)
				require.NoError(t, err)
				defer lin.Close()
				lin.HalfInputs = true // no effect at these rows: the split-K product either way
				li := tensor(t, n, dma.Float32, m, inter, randv(rng, m*inter, 1))
				scratch := tensor(t, n, dma.Float32, 1, lin.ScratchElems(m), nil)
				xc, yc := tensor(t, n, dma.Float32, m, hidden, x0), tensor(t, n, dma.Float32, m, hidden, nil)
				run(t, n, func(r *vk.Recorder) error { return lin.RecordResidualNorm(r, xc, li, g, yc, w, eps, scratch) })
				xd, yd := tensor(t, n, dma.Float32, m, hidden, x0), tensor(t, n, dma.Float32, m, hidden, nil)
				lo := tensor(t, n, dma.Float32, m, hidden, nil)
				run(t, n, func(r *vk.Recorder) error {
					if err := lin.Record(r, lo, li, scratch); err != nil {
						return err
					}
					return n.RecordResidualNorm(r, xd, lo, g, yd, w, eps)
				})
				require.Equal(t, download(t, xd), download(t, xc), "residual")
				require.Equal(t, download(t, yd), download(t, yc), "norm")
				big := tensor(t, n, dma.Float32, 5, inter, nil)
				err = n.Run(ctx, func(r *vk.Recorder) error { return lin.RecordResidualNorm(r, xc, big, g, yc, w, eps, scratch) })
				require.ErrorContains(t, err, "5 rows")
			})
		}
	}
}
