package doge

import (
	"context"
	"fmt"
	"sync"

	"github.com/dmavk/dmavk/dma"
	"github.com/dmavk/dmavk/nn"
	"github.com/dmavk/dmavk/vk"
)

// DefaultPrefillChunk is the rows of a prompt that the linear layers, the MLP and one
// attention call take at once, unless Options.PrefillChunk says otherwise.
const DefaultPrefillChunk = 4096

// State holds the KV caches of up to Sequences sequences of up to Capacity tokens each
// and runs the model over them: Prefill starts a sequence with its prompt, Step adds one
// token to each of several sequences in one recorded submission. Calls on one State are
// serialized; Close it before the model.
type State struct {
	m                   *Model
	Sequences, Capacity int

	mu     sync.Mutex
	caches []*dma.KVCache
	lens   []int
	rope   *nn.RoPE
	steps  map[string]*decodeProgram
	last   StepTiming
	closed bool
}

// NewState allocates the caches.
func (m *Model) NewState(sequences, capacity int) (*State, error) {
	if sequences < 1 || capacity < 1 {
		return nil, fmt.Errorf("doge: NewState: %d sequences of %d tokens", sequences, capacity)
	}
	if m.closed() {
		return nil, fmt.Errorf("doge: NewState: the model is closed")
	}
	s := &State{m: m, Sequences: sequences, Capacity: capacity, lens: make([]int, sequences), rope: m.newRoPE(), steps: map[string]*decodeProgram{}}
	for _, l := range m.layers {
		c, err := m.n.DMA().NewKVCache(l.attn.KVCacheConfig(sequences, capacity))
		if err != nil {
			s.Close()
			return nil, fmt.Errorf("doge: NewState: %w", err)
		}
		s.caches = append(s.caches, c)
	}
	return s, nil
}

// Len is the number of tokens sequence seq holds.
func (s *State) Len(seq int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq < 0 || seq >= len(s.lens) {
		return 0
	}
	return s.lens[seq]
}

// Reset empties sequence seq.
func (s *State) Reset(seq int) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if seq < 0 || seq >= len(s.lens) {
		return fmt.Errorf("doge: Reset: sequence %d of %d", seq, len(s.lens))
	}
	for _, c := range s.caches {
		if err := c.Reset(seq); err != nil {
			return err
		}
	}
	s.lens[seq] = 0
	return nil
}

// Close frees the caches and recorded steps.
func (s *State) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	for _, p := range s.steps {
		p.close()
	}
	s.steps = nil
	for _, c := range s.caches {
		c.Close()
	}
	s.caches = nil
	return nil
}

func (s *State) checkTokens(tokens []int) error {
	for i, t := range tokens {
		if t < 0 || t >= s.m.Cfg.VocabSize {
			return fmt.Errorf("token %d at %d is outside the vocabulary of %d", t, i, s.m.Cfg.VocabSize)
		}
	}
	return nil
}

// closer collects what a call allocates.
type closer []interface{ Close() error }

func (c *closer) add(x interface{ Close() error }) { *c = append(*c, x) }
func (c closer) close() {
	for i := len(c) - 1; i >= 0; i-- {
		c[i].Close()
	}
}

// Prefill runs the prompt tokens through the model as the start of sequence seq (which
// must be empty), as one forward pass of transformers would (CDMoE routes the pass's
// tokens together), and returns the logits of the last position ([vocab]). The linear
// layers, the MLP and attention take the prompt Options.PrefillChunk rows at a time
// (attention: each chunk of queries over every key up to its last).
func (s *State) Prefill(ctx context.Context, seq int, tokens []int) ([]float32, error) {
	return s.prefillCall(ctx, seq, tokens, false)
}

// PrefillAll is Prefill returning the logits of every position ([len(tokens)*vocab]).
func (s *State) PrefillAll(ctx context.Context, seq int, tokens []int) ([]float32, error) {
	return s.prefillCall(ctx, seq, tokens, true)
}

// Vocab is the vocabulary size (the length of a row of logits).
func (s *State) Vocab() int { return s.m.Cfg.VocabSize }

func (s *State) prefillCall(ctx context.Context, seq int, tokens []int, all bool) ([]float32, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fail := func(err error) ([]float32, error) { return nil, fmt.Errorf("doge: Prefill: %w", err) }
	switch {
	case s.closed:
		return fail(fmt.Errorf("the state is closed"))
	case s.m.closed():
		return fail(fmt.Errorf("the model is closed"))
	case seq < 0 || seq >= s.Sequences:
		return fail(fmt.Errorf("sequence %d of %d", seq, s.Sequences))
	case s.lens[seq] != 0:
		return fail(fmt.Errorf("sequence %d holds %d tokens: a prompt starts a sequence (Reset it, or Step)", seq, s.lens[seq]))
	case len(tokens) == 0:
		return fail(fmt.Errorf("no tokens"))
	case len(tokens) > s.Capacity:
		return fail(fmt.Errorf("%d tokens exceed the capacity %d", len(tokens), s.Capacity))
	}
	if err := s.checkTokens(tokens); err != nil {
		return fail(err)
	}
	logits, err := s.prefill(ctx, seq, tokens, all)
	if err != nil {
		for _, c := range s.caches {
			c.Reset(seq)
		}
		return fail(err)
	}
	s.lens[seq] = len(tokens)
	return logits, nil
}

func (s *State) prefill(ctx context.Context, seq int, tokens []int, all bool) ([]float32, error) {
	m, n := s.m, s.m.n
	c := m.Cfg
	T := len(tokens)
	chunk := min(m.chunk, T)
	var free closer
	defer func() { free.close() }()
	newT := func(dt dma.DType, rows, cols int) (*nn.Tensor, error) {
		t, err := n.NewTensor(dt, rows, cols)
		if err == nil {
			free.add(t)
		}
		return t, err
	}
	f32 := dma.Float32
	var x, xn, ao, mo, cs, ids *nn.Tensor
	var err error
	for _, b := range []struct {
		dst  **nn.Tensor
		cols int
	}{{&x, c.HiddenSize}, {&xn, c.HiddenSize}, {&ao, c.HiddenSize}, {&mo, c.HiddenSize}, {&cs, c.HeadDim}, {&ids, 1}} {
		if *b.dst, err = newT(f32, T, b.cols); err != nil {
			return nil, err
		}
	}
	if err := ids.UploadIDs(ctx, tokens); err != nil {
		return nil, err
	}
	pos := make([]int, T)
	for i := range pos {
		pos[i] = i
	}
	if err := cs.Upload(ctx, s.rope.Table(pos, T-1)); err != nil {
		return nil, err
	}
	l0 := m.layers[0]
	pb, err := l0.attn.NewProjectBuffers(n, chunk)
	if err != nil {
		return nil, err
	}
	free.add(pb)
	mb, err := l0.mlp.NewBuffers(n, chunk)
	if err != nil {
		return nil, err
	}
	free.add(mb)
	var eb *nn.ExpertBuffers
	if l0.experts != nil {
		if eb, err = l0.experts.NewBuffers(n, T); err != nil {
			return nil, err
		}
		free.add(eb)
	}
	d := n.DMA()
	qkvShape := func(h int) dma.Shape { return dma.Shape{B: 1, L: T, H: h, D: c.HeadDim} }
	q, err := d.NewTensor(m.DType, qkvShape(c.NumAttentionHeads), dma.BLHD)
	if err != nil {
		return nil, err
	}
	free.add(q)
	k, err := d.NewTensor(m.DType, qkvShape(c.NumKeyValueHeads), dma.BLHD)
	if err != nil {
		return nil, err
	}
	free.add(k)
	v, err := d.NewTensor(m.DType, qkvShape(c.NumKeyValueHeads), dma.BLHD)
	if err != nil {
		return nil, err
	}
	free.add(v)
	w, err := d.NewWeights(1, c.NumKeyValueHeads, T)
	if err != nil {
		return nil, err
	}
	free.add(w)
	o, err := d.NewTensor(m.DType, qkvShape(c.NumAttentionHeads), dma.BLHD)
	if err != nil {
		return nil, err
	}
	free.add(o)
	ov, _ := nn.ViewOf(o)
	qv, _ := nn.ViewOf(q)
	kv, _ := nn.ViewOf(k)
	vv, _ := nn.ViewOf(v)
	rows := func(t *nn.Tensor, a, b int) *nn.Tensor {
		sl, e := t.Slice(a, b)
		if e != nil && err == nil {
			err = e
		}
		return sl
	}
	err = n.Run(ctx, func(r *vk.Recorder) error {
		for a := 0; a < T; a += chunk {
			b := min(a+chunk, T)
			xs, is := rows(x, a, b), rows(ids, a, b)
			if err != nil {
				return err
			}
			if err := m.embed.Record(n, r, xs, is); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	for li, l := range m.layers {
		// Projections, norms, RoPE and the dynamic weights of every key, chunk by chunk.
		err = n.Run(ctx, func(r *vk.Recorder) error {
			for a := 0; a < T; a += chunk {
				b := min(a+chunk, T)
				xs, xns := rows(x, a, b), rows(xn, a, b)
				if err != nil {
					return err
				}
				if err := n.RecordRMSNorm(r, xns, xs, l.inNorm, float32(c.RMSNormEps)); err != nil {
					return err
				}
				if err := l.attn.RecordProject(r, pb, xns); err != nil {
					return err
				}
				qs, ks, vs, css := rows(qv, a, b), rows(kv, a, b), rows(vv, a, b), rows(cs, a, b)
				if err != nil {
					return err
				}
				if err := l.attn.RecordQKV(n, r, pb, 0, b-a, qs, ks, vs, w, a, css); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, err
		}
		if err := s.caches[li].Append(ctx, seq, k, v, w); err != nil {
			return nil, fmt.Errorf("layer %d: %w", li, err)
		}
		if err := s.attendPrompt(ctx, l, q, k, v, w, o); err != nil {
			return nil, fmt.Errorf("layer %d: %w", li, err)
		}
		err = n.Run(ctx, func(r *vk.Recorder) error { return s.recordPrefillRest(r, l, T, chunk, ov, x, xn, ao, mo, pb, mb, eb) })
		if err != nil {
			return nil, fmt.Errorf("layer %d: %w", li, err)
		}
	}
	// The final norm and the output projection of the rows asked for.
	first := T - 1
	if all {
		first = 0
	}
	out := make([]float32, 0, (T-first)*c.VocabSize)
	lrows := min(256, chunk, T-first) // logits rows at a time: vocab-wide rows are large
	logits, err := newT(f32, lrows, c.VocabSize)
	if err != nil {
		return nil, err
	}
	scratch, err := newT(f32, 1, max(1, m.lmHead.ScratchElems(lrows)))
	if err != nil {
		return nil, err
	}
	for a := first; a < T; a += lrows {
		b := min(a+lrows, T)
		err = n.Run(ctx, func(r *vk.Recorder) error {
			xs, xns, ls := rows(x, a, b), rows(xn, a, b), rows(logits, 0, b-a)
			if err != nil {
				return err
			}
			if err := n.RecordRMSNorm(r, xns, xs, m.norm, float32(c.RMSNormEps)); err != nil {
				return err
			}
			return m.lmHead.Record(r, ls, xns, scratch)
		})
		if err != nil {
			return nil, err
		}
		ls, _ := logits.Slice(0, b-a)
		got, err := ls.Download(ctx)
		if err != nil {
			return nil, err
		}
		out = append(out, got...)
	}
	return out, nil
}

// attendPrompt computes DMA attention of the prompt's queries q over its keys k, v
// (weights w) into o, Options.AttentionChunk queries per call: the chunk of queries
// [a, b) attends keys [0, b), causally (bottom-right aligned).
func (s *State) attendPrompt(ctx context.Context, l *layer, q, k, v *dma.Tensor, w *dma.Weights, o *dma.Tensor) error {
	d := s.m.n.DMA()
	T := q.Shape().L
	step := s.m.chunk
	opt := l.attn.Options()
	if T <= step {
		opt.Weights = w
		res, err := d.Forward(ctx, q, k, v, opt)
		if err != nil {
			return err
		}
		defer res.Close()
		return d.VK().Run(ctx, func(r *vk.Recorder) error {
			return r.Copy(res.O.Buffer(), 0, o.Buffer(), 0, rowBytes(res.O, T))
		})
	}
	for a := 0; a < T; a += step {
		b := min(a+step, T)
		if err := s.attendChunk(ctx, l, q, k, v, w, o, a, b, opt); err != nil {
			return err
		}
	}
	return nil
}

// rowBytes is the bytes of n rows (positions) of a B=1 BLHD tensor.
func rowBytes(t *dma.Tensor, n int) int64 {
	sh := t.Shape()
	return int64(n) * int64(sh.H*sh.D) * int64(t.DType().Size())
}

// attendChunk is attendPrompt's call for queries [a, b): the queries, the first b keys
// and their weights copied into tensors of their own, the output copied back.
func (s *State) attendChunk(ctx context.Context, l *layer, q, k, v *dma.Tensor, w *dma.Weights, o *dma.Tensor, a, b int, opt dma.Options) error {
	d := s.m.n.DMA()
	var free closer
	defer func() { free.close() }()
	qs, ks := q.Shape(), k.Shape()
	qc, err := d.NewTensor(q.DType(), dma.Shape{B: 1, L: b - a, H: qs.H, D: qs.D}, dma.BLHD)
	if err != nil {
		return err
	}
	free.add(qc)
	kc, err := d.NewTensor(k.DType(), dma.Shape{B: 1, L: b, H: ks.H, D: ks.D}, dma.BLHD)
	if err != nil {
		return err
	}
	free.add(kc)
	vc, err := d.NewTensor(v.DType(), dma.Shape{B: 1, L: b, H: ks.H, D: ks.D}, dma.BLHD)
	if err != nil {
		return err
	}
	free.add(vc)
	wc, err := d.NewWeights(1, w.Hb, b)
	if err != nil {
		return err
	}
	free.add(wc)
	err = d.VK().Run(ctx, func(r *vk.Recorder) error {
		if err := r.Copy(q.Buffer(), rowBytes(q, a), qc.Buffer(), 0, rowBytes(q, b-a)); err != nil {
			return err
		}
		if err := r.Copy(k.Buffer(), 0, kc.Buffer(), 0, rowBytes(k, b)); err != nil {
			return err
		}
		if err := r.Copy(v.Buffer(), 0, vc.Buffer(), 0, rowBytes(v, b)); err != nil {
			return err
		}
		for h := 0; h < w.Hb; h++ { // weights [Hb][Lk]: the first b of each row
			if err := r.Copy(w.Buffer(), int64(h*w.Lk)*4, wc.Buffer(), int64(h*b)*4, int64(b)*4); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	opt.Weights = wc
	res, err := d.Forward(ctx, qc, kc, vc, opt)
	if err != nil {
		return err
	}
	defer res.Close()
	return d.VK().Run(ctx, func(r *vk.Recorder) error {
		return r.Copy(res.O.Buffer(), 0, o.Buffer(), rowBytes(o, a), rowBytes(o, b-a))
	})
}

// recordPrefillRest records a layer after attention over all T rows: the output
// projection and gated residual, the MLP (or CDMoE) and its gated residual.
func (s *State) recordPrefillRest(r *vk.Recorder, l *layer, T, chunk int, o, x, xn, ao, mo *nn.Tensor, pb *nn.ProjectBuffers, mb *nn.MLPBuffers, eb *nn.ExpertBuffers) error {
	n, eps := s.m.n, float32(s.m.Cfg.RMSNormEps)
	for a := 0; a < T; a += chunk {
		b := min(a+chunk, T)
		var vs [5]*nn.Tensor
		for i, t := range []*nn.Tensor{o, x, xn, ao, mo} {
			sl, err := t.Slice(a, b)
			if err != nil {
				return err
			}
			vs[i] = sl
		}
		os, xs, xns, aos, mos := vs[0], vs[1], vs[2], vs[3], vs[4]
		if err := l.attn.O.Record(r, aos, os, pb.Scratch); err != nil {
			return err
		}
		if err := n.RecordResidual(r, xs, aos, xs, l.inRes); err != nil {
			return err
		}
		if err := n.RecordRMSNorm(r, xns, xs, l.postNorm, eps); err != nil {
			return err
		}
		if err := l.mlp.Record(n, r, mos, xns, mb); err != nil {
			return err
		}
		if l.experts != nil {
			if err := l.experts.RecordRouter(r, eb, a, xns); err != nil {
				return err
			}
		}
	}
	if l.experts != nil {
		if err := l.experts.RecordRoute(n, r, eb, T); err != nil {
			return err
		}
		if err := l.experts.RecordApply(n, r, eb, 0, mo, xn); err != nil {
			return err
		}
	}
	return n.RecordResidual(r, x, mo, x, l.postRes)
}
